"""Takeover scope: only the deploy user's own server, with a matching command, running from the
app's folder."""

from __future__ import annotations

import re

import pytest

from signalcraft_deploy.core.facts import HostFacts, Owner
from signalcraft_deploy.core.plan import How, PlanError, _takeover
from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy.host.facts import app_module_files, owners_script, parse_owners

S = load_settings(environ={}, overrides={})
ME = Owner(1000, "ubuntu", "/home/ubuntu/old-app", holds_app=True)


def facts(owner: Owner | None) -> HostFacts:
    return HostFacts(uid=1000, user="ubuntu", owners={} if owner is None else {42: owner})


@pytest.mark.parametrize(
    "command",
    [
        "venv/bin/python app.py",
        "/usr/bin/python3.11 -m flask run",
        "python3 app.py",
        "/srv/venv/bin/python3 /srv/venv/bin/gunicorn app:app",
        "gunicorn: master [app:app]",
    ],
)
def test_the_default_matches_a_python_gunicorn_or_flask_server(command: str) -> None:
    assert re.search(S.legacy_match, command)
    assert _takeover(S, facts(ME), 42, command).how is How.TAKEOVER


@pytest.mark.parametrize(
    "command", ["node /opt/python-tools/server.js", "ruby app.rb --python", "mypython app.py"]
)
def test_the_default_is_narrower_than_python_anywhere(command: str) -> None:
    with pytest.raises(PlanError, match="does not match LEGACY_MATCH"):
        _takeover(S, facts(ME), 42, command)


def test_another_users_process_is_refused_by_user_and_pid_and_its_command_not_shown() -> None:
    other = Owner(65534, "nobody")
    with pytest.raises(PlanError) as err:
        _takeover(S, facts(other), 42, "python3 -m http.server --password=OTHER_TEAM")
    text = str(err.value)
    assert "pid 42 of user nobody, not of the deploy user ubuntu" in text and "left running" in text
    assert (
        "Stop it (as nobody or root), or restart it as signalcraft and deploy again" in text
        and "OTHER_TEAM" not in text
    )


def test_the_deploy_users_process_outside_the_app_folder_is_refused() -> None:
    elsewhere = Owner(1000, "ubuntu", "/tmp", holds_app=False)
    with pytest.raises(
        PlanError, match="which runs from /tmp, not from the app's folder .* module 'app'"
    ):
        _takeover(S, facts(elsewhere), 42, "python3 -m http.server 8001")


def test_an_owner_that_could_not_be_read_is_refused() -> None:
    with pytest.raises(PlanError, match="whose owner could not be read"):
        _takeover(S, facts(None), 42, "python app.py")


def test_owners_are_read_and_the_app_module_is_what_wsgi_app_names() -> None:
    user, owners = parse_owners(
        "ubuntu\n42 1000 ubuntu yes /home/ubuntu/old app\n43 65534 nobody no \n"
    )
    assert user == "ubuntu"
    assert owners == {
        42: Owner(1000, "ubuntu", "/home/ubuntu/old app", True),
        43: Owner(65534, "nobody", "", False),
    }
    assert app_module_files(load_settings(environ={}, overrides={"WSGI_APP": "pkg.wsgi:app"})) == [
        "pkg/wsgi.py",
        "pkg/wsgi/__init__.py",
    ]
    assert any("app.py" in line for line in owners_script(S, "8001"))
