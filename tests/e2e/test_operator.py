"""Issue 6: what an operator sees — GitHub Actions output, status (text and --json), releases, logs."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import AppRepo, Profile, clean_host, fab

OP = Profile("op", "/home/ubuntu/op", 8951, 3951, 8095)


@pytest.fixture(scope="module")
def deployed(sandbox, tmp_path_factory):
    repo = AppRepo(tmp_path_factory.mktemp("op") / "app")
    clean_host(OP)
    yield repo
    clean_host(OP)


def test_github_actions_output(sandbox, deployed, tmp_path):
    summary = tmp_path / "summary.md"
    result = fab(sandbox, OP, deployed, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                                             "GITHUB_ACTOR": "octocat", "GITHUB_RUN_ID": "4242"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("::group::") == out.count("::endgroup::") >= 8
    assert "::group::trial run" in out and "\x1b[" not in out  # no colour codes in CI logs
    text = summary.read_text()
    assert "Deploy succeeded" in text and "| trial run |" in text and "rollback" in text
    audit = [json.loads(line) for line in open(f"{OP.root}/.deploy/audit.log")]
    assert audit[-1]["by"]["github_actor"] == "octocat" and audit[-1]["by"]["github_run_id"] == "4242"


def test_github_actions_failure_is_annotated(sandbox, deployed, tmp_path):
    deployed.edit("app.py", 'VERSION = "1"', 'VERSION = "1"\nimport no_such_module_abc', "broken")
    summary = tmp_path / "summary.md"
    result = fab(sandbox, OP, deployed, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode != 0
    assert "::error::" in result.stdout
    assert "Deploy failed" in summary.read_text()
    deployed.git("reset", "-q", "--hard", "HEAD~1")


def test_status_text_and_json(sandbox, deployed):
    text = fab(sandbox, OP, None, task="status")
    assert text.returncode == 0, text.stdout + text.stderr
    current = open(f"{OP.root}/current/REVISION").read().strip()
    assert f"current   {current}" in text.stdout
    assert "op-python" in text.stdout and "op-nodejs" in text.stdout and "nginx -t  ok" in text.stdout
    data = json.loads(fab(sandbox, OP, None, "--json", task="status").stdout)
    assert data["current"]["release"] == current
    py = [a for a in data["apps"] if a["name"] == "op-python"][0]
    assert py["status"] == "online" and py["workers"] >= 1 and py["memory_workers_mb"] > 0
    assert all(h["status"] == 200 for h in data["health"].values())
    assert data["nginx_test_ok"] is True and data["recent"]


def test_releases_and_logs(sandbox, deployed):
    rel = fab(sandbox, OP, None, task="releases")
    assert rel.returncode == 0, rel.stderr
    lines = rel.stdout.splitlines()
    current = open(f"{OP.root}/current/REVISION").read().strip()
    assert f"* {current}" in lines  # the live release is marked
    assert any(line.endswith("(bad: failed its deploy)") for line in lines)  # the broken commit's release
    logs = fab(sandbox, OP, None, "--lines", "5", task="logs")
    assert logs.returncode == 0, logs.stderr
    assert "op-python" in logs.stdout
