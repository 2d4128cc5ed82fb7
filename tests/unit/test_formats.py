"""Format versions: every file the tool leaves on a host says its format and its writer; an older
format is read (migrated), a newer one stops with one message naming the writer and the upgrade."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import Exit

from signalcraft_deploy import __version__
from signalcraft_deploy.core import formats
from signalcraft_deploy.core.plan import Manifest, make_manifest, manifest_from
from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy.host import lock
from signalcraft_deploy.host.facts import MARK, parse_facts

KINDS = [formats.MANIFEST, formats.LOCK, formats.AUDIT, formats.TAKEOVER]


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    s = load_settings(environ={}, cwd=str(tmp_path))
    m, _ = make_manifest(
        s,
        sha="a" * 40,
        tree="t" * 40,
        python_code="p",
        node_code="n",
        requirements="flask\n",
        package_lock=None,
        app_env_digest=None,
        who="me@laptop",
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )
    return m


def test_the_tool_names_itself_with_its_version() -> None:
    assert formats.TOOL == f"signalcraft-deploy {__version__}"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.what)
def test_what_this_version_writes_it_reads_back_unchanged(kind: formats.Format) -> None:
    written = formats.stamp(kind, {"a": 1})
    assert written == {"a": 1, "format": kind.current, "tool": formats.TOOL}
    assert formats.read(kind, written, "here") == written


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.what)
def test_a_file_without_a_format_is_format_1_and_is_migrated(kind: formats.Format) -> None:
    assert formats.format_of({"a": 1}) == 1
    assert formats.read(kind, {"a": 1}, "here") == {"a": 1, "format": kind.current}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.what)
def test_every_older_format_has_a_migration(kind: formats.Format) -> None:
    assert set(kind.migrations) == set(range(1, kind.current))


def test_a_newer_format_is_refused_naming_its_writer_and_the_upgrade() -> None:
    newer = {"format": formats.MANIFEST.current + 1, "tool": "signalcraft-deploy 9.1.0"}
    with pytest.raises(formats.FormatError) as err:
        formats.read(formats.MANIFEST, newer, "The live release r1")
    assert (
        str(err.value)
        == f"The live release r1: the release manifest is in format {formats.MANIFEST.current + 1},"
        f" written by signalcraft-deploy 9.1.0; this is {formats.TOOL}, which reads formats up"
        f" to {formats.MANIFEST.current}. Upgrade the tool on this machine (pip install -U"
        " signalcraft-deploy) and run again."
    )


@pytest.mark.parametrize("value", [0, -1, "2", 2.0, True, None])
def test_a_format_that_is_not_a_number_is_refused(value: Any) -> None:
    with pytest.raises(formats.FormatError, match="not a format number"):
        formats.read(formats.AUDIT, {"format": value}, "audit.log")


# --- the release manifest
# ----------------------------------------------------------------------------------------


def test_a_manifest_is_written_with_its_format_and_writer_and_read_back(manifest: Manifest) -> None:
    data = json.loads(manifest.to_json())
    assert (data["format"], data["tool"]) == (formats.MANIFEST.current, formats.TOOL)
    assert manifest_from(data, "r") == manifest


def test_a_manifest_of_the_checkout_only_releases_is_read(manifest: Manifest) -> None:
    # What bd73369 (the tool before it was a package) and 0.3.0 wrote: these fields, no format, no
    # tool.
    old = {f.name: getattr(manifest, f.name) for f in fields(Manifest)}
    assert manifest_from(old, "r") == manifest


def test_a_manifest_missing_a_field_is_a_type_error_for_the_caller(manifest: Manifest) -> None:
    old = {f.name: getattr(manifest, f.name) for f in fields(Manifest) if f.name != "venv"}
    with pytest.raises(TypeError):
        manifest_from(old, "r")


def facts_output(manifest: dict[str, Any]) -> str:
    return f"\n{MARK}current\nreleases/r1\n{MARK}manifest\n{json.dumps(manifest)}\n"


def test_the_host_s_older_manifest_is_read_migrated(manifest: Manifest) -> None:
    old = {f.name: getattr(manifest, f.name) for f in fields(Manifest)}
    facts = parse_facts(facts_output(old))
    assert facts.manifest == {**old, "format": formats.MANIFEST.current}


def test_a_host_deployed_by_a_newer_version_stops_every_task_that_reads_it(
    manifest: Manifest,
) -> None:
    newer = {
        **json.loads(manifest.to_json()),
        "format": formats.MANIFEST.current + 1,
        "tool": "signalcraft-deploy 9.1.0",
    }
    with pytest.raises(Exit) as err:
        parse_facts(facts_output(newer))
    message = str(err.value.message)
    assert message.startswith("The live release r1: the release manifest is in format")
    assert "written by signalcraft-deploy 9.1.0" in message and message.endswith(
        "Nothing was changed."
    )
    assert err.value.code == 1


# --- the lock record and the audit log
# ---------------------------------------------------------------------------


def test_the_lock_record_carries_its_format_and_writer(tmp_path: Path) -> None:
    s = load_settings(environ={}, cwd=str(tmp_path))
    script = lock.lock_script(s, {"user": "me", "sha": "abc"}, 0)
    line = next(x for x in script.splitlines() if "> lock.json" in x)
    assert f'"format": {formats.LOCK.current}' in line and f'"tool": "{formats.TOOL}"' in line


def test_a_lock_record_of_any_format_describes_its_holder() -> None:
    old = json.dumps(
        {"user": "ann", "from": "laptop", "sha": "a" * 40, "since": "2026-11-30T10:00:00+00:00"}
    )
    assert (
        lock.describe_holder(old)
        == "ann@laptop, deploying aaaaaaaaaaaa since 2026-11-30T10:00:00+00:00"
    )
    newer = json.dumps({**json.loads(old), "format": 99, "tool": "signalcraft-deploy 9.1.0"})
    assert lock.describe_holder(newer).endswith(
        f"(with signalcraft-deploy 9.1.0, newer than this {formats.TOOL})"
    )
    assert lock.describe_holder("[1, 2]") == "unknown holder"


def test_every_audit_record_carries_the_tool_s_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(lock, "run", lambda c, command, **kw: sent.append(command))
    s = load_settings(environ={}, cwd=str(tmp_path))
    lock.audit(None, s, {"event": "deploy", "result": "ok"})
    line = json.loads(sent[0].split("printf '%s\\n' ", 1)[1].split(" >> ", 1)[0].strip("'"))
    assert (line["event"], line["format"], line["tool"]) == (
        "deploy",
        formats.AUDIT.current,
        formats.TOOL,
    )


def test_audit_lines_of_older_formats_are_read_and_newer_ones_are_named_not_guessed() -> None:
    assert lock.audit_record({"at": "t", "event": "deploy", "result": "ok"}) == {
        "at": "t",
        "event": "deploy",
        "result": "ok",
        "format": formats.AUDIT.current,
    }
    newer = lock.audit_record(
        {"at": "t", "format": 99, "tool": "signalcraft-deploy 9.1.0", "event": "x"}
    )
    assert (newer["result"], newer["tool"]) == ("unreadable", "signalcraft-deploy 9.1.0")
    assert "pip install -U signalcraft-deploy" in newer["note"]
