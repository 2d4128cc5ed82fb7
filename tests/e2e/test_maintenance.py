"""Maintenance mode on a real host: `maintenance on|off` as a user runs it (`fab -H your-host`,
the README's lines verbatim), Nginx's answers seen from outside, under a bounded loopback load.

One app (the example; profile "maint", ports 7363-7383), its tests in order, each starting from
what the one before left: on (under load: every answer is the app's or maintenance mode's 503,
none lost; the page, its JSON, Retry-After, the open health route, the home page open to the
tool's checks alone; `status` says so); a deploy of a code change and a rollback while it is on
(both pass their health gates; it stays on; the apps behind it changed); Nginx stopped and started
again, as a reboot does (still on); the app's own page from its repository; off (under load, none
lost; the app answers everywhere again). Three deploys and a rollback, about 60 s beyond them.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadgen import MAINTENANCE, LoadResult
from tests.e2e.conftest import (
    AppRepo,
    Profile,
    Sandbox,
    UserShell,
    clean_host,
    e2e_load,
    fab,
    sh,
    ssh_config,
    users_env,
)

MT = Profile("maint", "/home/ubuntu/maint", 7363, 7373, 7383)
MESSAGE = "Upgrading the database"
MAINTENANCE_ON = (
    'fab -H ubuntu@your-host maintenance on --message "Upgrading the database" --retry-after 600'
)
MAINTENANCE_OFF = "fab -H ubuntu@your-host maintenance off"
DOCUMENTED = (MAINTENANCE_ON, MAINTENANCE_OFF)
HOME, APP_ROUTE, HEALTH = MT.url("/"), MT.url("/api/flask/items"), MT.url("/api/flask/health")


def ask(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a request to the host's loopback (the tests run on the host)."""
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def run(user: UserShell, line: str) -> str:
    done = user.run(line)
    assert done.returncode == 0, (line, done.stdout + done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def app(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppRepo]:
    clean_host(MT)
    repo = AppRepo(tmp_path_factory.mktemp("maint") / "app")
    done = fab(sandbox, MT, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    yield repo
    clean_host(MT)


@pytest.fixture(scope="module")
def user(sandbox: Sandbox, app: AppRepo, tmp_path_factory: pytest.TempPathFactory) -> UserShell:
    home = tmp_path_factory.mktemp("maint-home")
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh/config").write_text(ssh_config(sandbox, {"your-host": 22}, user="ubuntu"))
    settings = home / "deploy.env"
    settings.write_text(
        "".join(f"{k}={v}\n" for k, v in MT.settings().items())
        + f"KNOWN_HOSTS={sandbox.known_hosts}\nSOURCE_DIR={app.path}\n"
    )
    return UserShell(users_env(home) | {"ENV_FILE": str(settings)})


def switched_under_load(user: UserShell, line: str) -> tuple[str, LoadResult]:
    """Run `line` while a bounded load asks the home page, an app route and the health route."""
    with e2e_load(
        [HOME, APP_ROUTE, HEALTH], threads=2, max_requests=20_000, max_seconds=90
    ) as load:
        said = run(user, line)
    return said, load.result()


def assert_closed(retry_after: int, message: str) -> None:
    """The app's routes answer maintenance mode's 503; the health route and the tool's checks do
    not."""
    for url in (HOME, APP_ROUTE, MT.url("/any/path?x=1")):
        status, headers, body = ask(url, {"Accept": "text/html,*/*;q=0.8"})
        assert status == 503 and headers.get("Retry-After") == str(retry_after), (url, headers)
        assert headers["Content-Type"].startswith("text/html") and message in body, body
    status, headers, body = ask(APP_ROUTE, {"Accept": "application/json"}, data=b"a=1")  # a POST
    assert status == 503 and headers["Content-Type"] == "application/json", headers
    assert json.loads(body) == {"error": "maintenance", "message": message, "retry_after": 600}
    assert ask(HEALTH)[0] == 200  # a load balancer's check keeps the host in
    assert ask(HOME, {"X-Signalcraft-Health": "1"})[0] == 200  # '/' is HEALTH_NODE: the tool's
    assert ask(MT.url("/.signalcraft-deploy-site"))[0] == 200


def version(app: AppRepo, number: int) -> None:
    old = re.search(r'^const VERSION = "(\d+)";', (app.path / "server.js").read_text(), re.M)
    assert old is not None
    app.edit("server.js", old.group(0), f'const VERSION = "{number}";', f"v{number}")


def node_version() -> str:
    """The Node.js app's VERSION, asked directly (behind Nginx's maintenance mode)."""
    return json.loads(ask(f"http://127.0.0.1:{MT.node}/")[2])["version"]


def test_on_closes_every_path_but_the_health_route_and_loses_no_request(
    sandbox: Sandbox, app: AppRepo, user: UserShell
) -> None:
    said, load = switched_under_load(user, MAINTENANCE_ON)
    assert "maintenance mode ON" in said and "Retry-After 600 s" in said, said
    assert load.failed_not_maintenance == 0, (load.summary(), load.samples[:5], load.answers)
    assert set(load.answers) <= {"200", MAINTENANCE}, load.answers
    assert load.answers.get(MAINTENANCE, 0) > 0 and load.per_url[HEALTH].failed == 0
    assert_closed(600, MESSAGE)
    status = fab(sandbox, MT, None, task="status")
    assert status.returncode == 0 and "MAINTENANCE ON since" in status.stdout, status.stdout
    assert f"message: '{MESSAGE}'" in status.stdout


def test_a_deploy_and_a_rollback_keep_it_on(sandbox: Sandbox, app: AppRepo) -> None:
    version(app, 2)
    done = fab(sandbox, MT, app)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Maintenance mode is still ON" in done.stdout, done.stdout
    assert node_version() == "2"
    assert_closed(600, MESSAGE)
    done = fab(sandbox, MT, None, task="rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Maintenance mode is still ON" in done.stdout, done.stdout
    assert node_version() == "1"
    assert_closed(600, MESSAGE)


def test_it_survives_nginx_stopping_and_starting_as_at_boot() -> None:
    sh("nginx -s quit; for i in $(seq 50); do pgrep -x nginx >/dev/null || break; sleep 0.1; done")
    sh("nginx")
    assert_closed(600, MESSAGE)


def test_the_apps_own_page_is_served_with_the_message_filled_in(
    sandbox: Sandbox, app: AppRepo
) -> None:
    (app.path / "maintenance.html").write_text(
        "<html><body><h1>Shop closed</h1><p>{{ message }}</p>"
        "<p>back in {{ retry_after }} s</p></body></html>\n"
    )
    done = fab(
        sandbox,
        MT,
        None,
        "--set",
        f"SOURCE_DIR={app.path}",
        "on",
        "--message",
        "Stock <taking> & more",
        task="maintenance",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "maintenance.html" in done.stdout
    status, headers, body = ask(HOME)
    assert status == 503 and headers.get("Retry-After") == "600"  # MAINTENANCE_RETRY_AFTER
    assert body == (
        "<html><body><h1>Shop closed</h1><p>Stock &lt;taking&gt; &amp; more</p>"
        "<p>back in 600 s</p></body></html>\n"
    )
    assert json.loads(ask(HOME, {"Accept": "application/json"})[2])["message"] == (
        "Stock <taking> & more"
    )
    Path(app.path / "maintenance.html").unlink()


def test_off_opens_every_path_again_and_loses_no_request(
    sandbox: Sandbox, app: AppRepo, user: UserShell
) -> None:
    said, load = switched_under_load(user, MAINTENANCE_OFF)
    assert "maintenance mode OFF" in said, said
    assert load.failed_not_maintenance == 0, (load.summary(), load.samples[:5], load.answers)
    assert set(load.answers) <= {"200", MAINTENANCE}, load.answers
    for url in (HOME, APP_ROUTE, HEALTH):
        status, headers, _ = ask(url)
        assert status == 200 and "Retry-After" not in headers, (url, status)
    status = fab(sandbox, MT, None, task="status")
    assert status.returncode == 0 and "MAINTENANCE" not in status.stdout, status.stdout
    again = fab(sandbox, MT, None, "off", task="maintenance")
    assert again.returncode == 0 and "was not on" in again.stdout, again.stdout + again.stderr
