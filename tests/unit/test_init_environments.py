"""`init --environments staging,production`: a settings file per environment, a deploy workflow
where a push deploys the first environment and each next one waits for the one before (and its
GitHub environment's approval) with the environment's URL, and a manual rollback workflow. The
YAML is read with a YAML parser; the rollback's run line runs in bash against a stand-in `fab`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Context
from invoke.exceptions import Exit
from ruamel.yaml import YAML

from signalcraft_deploy.core.settings import read_environment
from signalcraft_deploy.tasks.init import ROLLBACK_WORKFLOW, WORKFLOW, init, init_app


def workflow(root: Path, path: str) -> dict:
    return YAML(typ="safe").load((root / path).read_text())


def step(job: dict, name: str) -> dict:
    return next(s for s in job["steps"] if s.get("name") == name)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    outcomes, _ = init_app(tmp_path, environments=("staging", "production"))
    assert {"deploy.staging.env", "deploy.production.env", ROLLBACK_WORKFLOW} <= {
        o.path for o in outcomes if o.word == "wrote"
    }
    return tmp_path


def test_a_push_deploys_staging_and_production_waits_for_it(app: Path):
    flow = workflow(app, WORKFLOW)
    assert flow["on"]["push"] == {"branches": ["main"]}
    jobs = flow["jobs"]
    assert list(jobs) == ["deploy-staging", "deploy-production"]
    staging, production = jobs["deploy-staging"], jobs["deploy-production"]
    assert "needs" not in staging and production["needs"] == "deploy-staging"
    for name, job in (("staging", staging), ("production", production)):
        assert job["environment"] == {"name": name, "url": "${{ vars.APP_URL }}"}
        assert job["concurrency"] == {"group": f"deploy-{name}", "cancel-in-progress": False}
        deploy = step(job, "Deploy")
        assert deploy["run"] == f'fab -H "ubuntu@$EC2_HOST" deploy --environment {name}'
        assert deploy["env"]["NOTIFY_URL"] == "${{ secrets.NOTIFY_URL }}"
        assert step(job, "Install signalcraft-deploy")  # each job installs the tool itself
    assert "concurrency" not in flow  # per environment: staging never waits for production


def test_each_environment_s_file_is_read_over_deploy_env(app: Path):
    for name in ("staging", "production"):
        text = (app / f"deploy.{name}.env").read_text()
        assert f"--environment {name}" in text and "# DEPLOY_ROOT=" in text
        path, values, _ = read_environment(app / "deploy.env", name, "flag --environment")
        assert path == app / f"deploy.{name}.env" and values == {}  # all of it commented


def test_the_rollback_workflow_is_run_by_hand_for_a_chosen_environment(app: Path):
    flow = workflow(app, ROLLBACK_WORKFLOW)
    assert list(flow["on"]) == ["workflow_dispatch"]
    inputs = flow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["environment"]["options"] == ["staging", "production"]
    assert inputs["to"]["required"] is False
    job = flow["jobs"]["rollback"]
    assert job["environment"] == "${{ inputs.environment }}"
    assert job["concurrency"]["group"] == "deploy-${{ inputs.environment }}"  # the deploy's group
    run = step(job, "Roll back")["run"]
    assert "${{" not in run  # inputs reach the shell as variables, never as script text


def stand_in_fab(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fab").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (bin_dir / "fab").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "EC2_HOST": "web1"}


@pytest.mark.parametrize(
    ("to", "args"),
    [
        ("", []),
        ("20261207-120000-abc; rm -rf ~", ["--to", "20261207-120000-abc; rm -rf ~"]),
    ],
)
def test_the_rollback_step_passes_the_release_as_one_argument(
    app: Path, tmp_path: Path, to: str, args: list[str]
):
    run = step(workflow(app, ROLLBACK_WORKFLOW)["jobs"]["rollback"], "Roll back")["run"]
    env = {**stand_in_fab(tmp_path), "ENVIRONMENT": "production", "TO": to}
    done = subprocess.run(["bash", "-e", "-c", run], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = ["-H", "ubuntu@web1", "rollback", "--environment", "production", *args]
    assert done.stdout.splitlines() == expected


def test_without_environments_one_job_deploys_production_and_rollback_needs_no_flag(
    tmp_path: Path,
):
    init_app(tmp_path)
    assert list(workflow(tmp_path, WORKFLOW)["jobs"]) == ["deploy"]
    flow = workflow(tmp_path, ROLLBACK_WORKFLOW)
    assert flow["on"]["workflow_dispatch"]["inputs"]["environment"]["options"] == ["production"]
    run = step(flow["jobs"]["rollback"], "Roll back")["run"]
    assert run == 'fab -H "ubuntu@$EC2_HOST" rollback ${TO:+--to "$TO"}'
    assert not list(tmp_path.glob("deploy.*.env"))


def test_both_workflows_pass_github_s_schema(app: Path):
    checker = Path(sys.executable).with_name("check-jsonschema")
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed next to this Python")
    paths = [str(app / WORKFLOW), str(app / ROLLBACK_WORKFLOW)]
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_bad_environment_name_is_refused_before_anything_is_written(tmp_path: Path):
    with pytest.raises(Exit) as err:
        init(Context(), dir=str(tmp_path), environments="staging,Prod uction")
    assert err.value.code == 2 and "'Prod uction' is not an environment name" in str(err.value)
    assert list(tmp_path.iterdir()) == []
