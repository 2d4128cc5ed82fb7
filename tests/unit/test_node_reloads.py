"""Node.js reloads (issue 28): how a Node.js change is carried (NODE_RELOAD), PM2's timeouts from
settings, socket.io and other session-bound apps (one process by default, more refused with the
fix), `wait_ready` found by init, and the open connections a reload closes shown in the plan."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from signalcraft_deploy.core.discover import find_wait_ready
from signalcraft_deploy.core.facts import HostFacts
from signalcraft_deploy.core.plan import How, make_plan, release_settings
from signalcraft_deploy.core.render import node_entry, render_ecosystem
from signalcraft_deploy.core.settings import SettingsError, load_settings
from signalcraft_deploy.core.source import session_bound_package, with_session_bound
from signalcraft_deploy.host.facts import parse_facts
from tests.unit.test_plan import OLD, SHA2, live_host, manifest_for

SOCKET_IO = json.dumps({"name": "chat", "dependencies": {"socket.io": "^4.8.1"}})


def load(tmp: Path, **values: str):
    return load_settings(overrides=values, environ={}, cwd=str(tmp))


def test_socket_io_in_dependencies_is_session_bound_and_dev_dependencies_are_not() -> None:
    assert session_bound_package(SOCKET_IO) == "socket.io"
    assert session_bound_package(json.dumps({"devDependencies": {"socket.io": "4"}})) is None
    assert session_bound_package(json.dumps({"dependencies": {"ws": "8"}})) is None
    assert session_bound_package("not json") is None
    assert session_bound_package(None) is None


def test_a_socket_io_app_runs_one_process_by_default(tmp_path: Path) -> None:
    s = with_session_bound(load(tmp_path), SOCKET_IO)
    assert s.node_instances == 1
    assert "socket.io" in s.origins["NODE_INSTANCES"]
    assert node_entry(s)["instances"] == 1
    # an app without it keeps the default, 2
    assert with_session_bound(load(tmp_path), json.dumps({"dependencies": {}})).node_instances == 2


def test_more_processes_for_a_session_bound_app_are_refused_naming_the_key_and_the_fix(
    tmp_path: Path,
) -> None:
    with pytest.raises(SettingsError) as err:
        with_session_bound(load(tmp_path, NODE_INSTANCES="3"), SOCKET_IO)
    text = str(err.value)
    assert "NODE_INSTANCES=3" in text and "Session ID unknown" in text
    assert "Set NODE_INSTANCES=1" in text and "NODE_SESSION_BOUND=no" in text
    assert "redis-adapter" in text and "transports: ['websocket']" in text
    # NODE_INSTANCES=1 set explicitly is fine
    assert with_session_bound(load(tmp_path, NODE_INSTANCES="1"), SOCKET_IO).node_instances == 1


def test_node_session_bound_declares_or_denies_it(tmp_path: Path) -> None:
    declared = with_session_bound(load(tmp_path, NODE_SESSION_BOUND="yes"), None)
    assert declared.node_instances == 1
    shared = with_session_bound(
        load(tmp_path, NODE_SESSION_BOUND="no", NODE_INSTANCES="4"), SOCKET_IO
    )
    assert shared.node_instances == 4


def test_a_rollback_runs_the_instances_its_release_recorded(tmp_path: Path) -> None:
    s = release_settings(load(tmp_path), {"node_instances": 1})
    assert s.node_instances == 1
    # a value set now wins
    assert (
        release_settings(load(tmp_path, NODE_INSTANCES="3"), {"node_instances": 1}).node_instances
        == 3
    )


def test_pm2_timeouts_and_wait_ready_follow_the_settings(tmp_path: Path) -> None:
    s = load(tmp_path, NODE_KILL_TIMEOUT="8", NODE_LISTEN_TIMEOUT="45", NODE_WAIT_READY="true")
    text = render_ecosystem(s, "/v")
    assert "kill_timeout: 8000," in text
    assert "listen_timeout: 45000," in text
    assert "wait_ready: true," in text
    default = render_ecosystem(load(tmp_path), "/v")
    assert "listen_timeout: 30000," in default and "wait_ready: false," in default
    assert "kill_timeout: 15000," in default


@pytest.mark.parametrize(
    "source",
    [
        "process.send('ready');",
        'server.listen(3000, () => { process.send("ready") })',
        "if (process.send) process.send( `ready` )",
    ],
)
def test_init_finds_an_app_that_signals_ready(source: str) -> None:
    found = find_wait_ready({"server.js": "const x = 1;\n" + source})
    assert found is not None and found.value == "true"
    assert "server.js:2" in found.how


def test_init_does_not_find_ready_in_browser_code_or_installed_packages() -> None:
    assert find_wait_ready({"server.js": "process.send('started')"}) is None
    assert find_wait_ready({"node_modules/x/index.js": "process.send('ready')"}) is None
    assert find_wait_ready({"public/app.js": "process.send('ready')"}) is None


def _node_change(tmp: Path, **settings: str):
    old = replace(OLD, settings=settings)
    new = replace(old, sha=SHA2, tree="tree-2", node_code="node-2")
    return old, new


@pytest.mark.parametrize("how", ["handover", "reload"])
def test_a_node_code_change_is_carried_as_node_reload_says(tmp_path: Path, how: str) -> None:
    old, new = _node_change(tmp_path, NODE_RELOAD=how)
    facts = live_host(tmp_path, old)
    s, m, configs = manifest_for(tmp_path, new)
    assert make_plan(s, m, configs, facts).action("nodejs").how == How(how)


def test_the_plan_says_how_many_open_connections_a_node_reload_closes(tmp_path: Path) -> None:
    old, new = _node_change(tmp_path)
    facts = live_host(tmp_path, old, node_connections=5)
    s, m, configs = manifest_for(tmp_path, new)
    node = make_plan(s, m, configs, facts).action("nodejs")
    assert node.closes == 5
    assert node.shown.startswith("nodejs: handover (closes 5 open connection(s)")
    # an unchanged app closes nothing, and says nothing of it
    facts = live_host(tmp_path, OLD, node_connections=5)
    s, m, configs = manifest_for(tmp_path, OLD)
    node = make_plan(s, m, configs, facts).action("nodejs")
    assert node.how is How.NONE and node.shown == "nodejs: none"


def test_the_connection_count_is_read_from_the_hosts_facts() -> None:
    facts = parse_facts("\n@@signalcraft@@ node_conns\n3\n".replace("@@signalcraft@@ ", _mark()))
    assert facts.node_connections == 3
    assert parse_facts("").node_connections is None
    assert HostFacts().node_connections is None


def _mark() -> str:
    from signalcraft_deploy.host.facts import MARK

    return MARK
