"""Each release records its own Nginx site, and a rollback serves it again (issue 25, D6)."""

from __future__ import annotations

import io
import json
import re
import tarfile

import pytest
from conftest import mock_host
from invoke import Result
from invoke.exceptions import Exit

from signalcraft_deploy.core import release_site
from signalcraft_deploy.core.render import render_nginx_site, site_description
from signalcraft_deploy.core.settings import SettingsError
from signalcraft_deploy.host.releases import site_settings
from signalcraft_deploy.steps.upload import extras_tar

OLDER = {
    "py-routes": {"PY_ROUTES": "api,v1/x", "HEALTH_PY": "/api/health"},
    "streams": {"STREAM_ROUTES": "/api/flask/stream,/live/events"},
    "table": {"ROUTES": "/=python,/chat=nodejs", "HEALTH_PY": "/healthz", "HEALTH_NODE": "/chat/"},
    "mounted": {
        "ROUTES": "/app=python,/=nodejs",
        "HEALTH_PY": "/app/healthz",
        "GUNICORN_BIND": "127.0.0.1:9001",
    },
    "tls": {
        "TLS_CERT": "/etc/letsencrypt/live/a/fullchain.pem",
        "TLS_KEY": "/etc/letsencrypt/live/a/privkey.pem",
        "TLS_LISTEN": "8443",
        "TLS_REDIRECT": "false",
        "NGINX_LISTEN": "127.0.0.1:8080,[::1]:8080",
        "SERVER_NAME": "shop.example.com",
        "CLIENT_MAX_BODY_SIZE": "10m",
        "NODE_PORT": "3100",
    },
}
TODAY = {
    "ROUTES": "/=python,/talk=nodejs,/admin=python",
    "HEALTH_PY": "/admin/h",
    "HEALTH_NODE": "/talk/x",
    "NGINX_LISTEN": "8381",
    "SERVER_NAME": "new.example.com",
}


@pytest.mark.parametrize("name", sorted(OLDER))
def test_the_recorded_site_is_rendered_again_over_todays_settings(load, name: str) -> None:
    older = load(OLDER[name])
    back = release_site.settings_of(load(TODAY), release_site.record(older), "r1")
    assert render_nginx_site(back) == render_nginx_site(older)
    assert (back.health_py, back.health_node) == (older.health_py, older.health_node)
    assert back.gunicorn_bind == older.gunicorn_bind and back.node_port == older.node_port
    changed = {
        k for k, where in back.origins.items() if where == "release r1's .signalcraft/site.json"
    }
    assert "ROUTES" in changed and "HEALTH_PY" in changed


def test_the_handover_addresses_follow_the_releases_own(load) -> None:
    back = release_site.settings_of(load(TODAY), release_site.record(load(OLDER["mounted"])), "r1")
    assert str(back.gunicorn_handover_bind) == "127.0.0.1:9002"


@pytest.mark.parametrize(
    "text", ["", "[]", '{"description": {}}', json.dumps({"description": {"routes": ["a;b"]}})]
)
def test_an_unreadable_record_is_refused_by_name(load, text: str) -> None:
    with pytest.raises(
        SettingsError,
        match=r"release r1's \.signalcraft/site\.json cannot be read .* --to another release",
    ):
        release_site.settings_of(load(), text, "r1")


def test_a_record_root_would_refuse_is_refused(load) -> None:
    data = json.loads(release_site.record(load()))
    data["description"]["routes"] = ["api;include /etc/shadow"]
    with pytest.raises(SettingsError, match="cannot be read"):
        release_site.settings_of(load(), json.dumps(data), "r1")


def test_a_release_without_a_record_keeps_todays_site_with_a_warning(load) -> None:
    s, warnings = load(TODAY), []
    c = mock_host(
        run={
            re.compile(r"test -f .*/releases/r1/\.signalcraft/site\.json .*"): Result("", exited=1)
        }
    )
    assert site_settings(c, s, "r1", warnings.append) is s
    assert len(warnings) == 1 and warnings[0].startswith(
        "r1 records no Nginx site (an older version deployed it)"
    )


def test_a_release_with_a_record_gets_its_site_back(load) -> None:
    older, warnings = load(OLDER["table"]), []
    c = mock_host(run={re.compile(r"test -f .*site\.json.*"): Result(release_site.record(older))})
    back = site_settings(c, load(TODAY), "r1", warnings.append)
    assert site_description(back) == site_description(older) and not warnings


def test_a_bad_record_stops_the_rollback_before_anything_changes(load) -> None:
    c = mock_host(run={re.compile(r"test -f .*site\.json.*"): Result("{")})
    with pytest.raises(Exit, match="Nothing was changed: release r1's"):
        site_settings(c, load(), "r1", print)


def test_the_release_carries_its_site_record_readable_by_the_deploy_user_only(load) -> None:
    from signalcraft_deploy.core.plan import Manifest, Plan

    s = load(OLDER["table"])
    manifest = Manifest(
        **{
            f: "x"
            for f in (
                "release",
                "key",
                "sha",
                "tree",
                "python_code",
                "node_code",
                "requirements",
                "venv",
                "python_entry",
                "node_entry",
                "gunicorn_conf",
                "deployed_at",
                "deployed_by",
            )
        },
        package_lock=None,
        node_modules=None,
    )
    plan = Plan(manifest=manifest, configs={}, site=render_nginx_site(s), new_release=True)
    with tarfile.open(fileobj=io.BytesIO(extras_tar(plan, release_site.record(s)))) as tar:
        member = tar.getmember(".signalcraft/site.json")
        assert member.mode == 0o600
        recorded = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    assert recorded["description"] == site_description(s) and recorded["health_node"] == "/chat/"


def test_status_and_nginx_check_look_at_the_live_releases_own_site(load) -> None:
    from signalcraft_deploy.host.releases import live_site_settings

    today, older = load(TODAY), load(OLDER["table"])
    recorded = mock_host(
        run={
            re.compile(r"test -f .*/releases/r1/.*site\.json.*"): Result(release_site.record(older))
        }
    )
    assert site_description(live_site_settings(recorded, today, "r1")) == site_description(older)
    for answer in (
        Result("", exited=1),
        Result("{"),
    ):  # none recorded, or one that does not fit: today's, quietly
        assert (
            live_site_settings(mock_host(run={re.compile(r"test -f .*"): answer}), today, "r1")
            is today
        )
    assert live_site_settings(mock_host(), today, None) is today
