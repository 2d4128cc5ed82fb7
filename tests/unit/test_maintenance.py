"""Maintenance mode's pages and description (core/maintenance.py) and the task's refusals before
any host is contacted (tasks/maintenance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from signalcraft_deploy.core import maintenance as pages
from signalcraft_deploy.core.settings import SettingsError, load_settings
from signalcraft_deploy.remote import nginx_site
from signalcraft_deploy.tasks import maintenance as task


def settings(tmp_path: Path, **values: str):
    return load_settings(environ={"SOURCE_DIR": str(tmp_path), **values})


def test_the_message_is_escaped_for_html_and_is_a_json_string(tmp_path: Path) -> None:
    s = settings(tmp_path)
    message = '<script>alert("x")</script> & {{ retry_after }} \\u2028 é'
    desc = pages.description(s, message, 90, None)
    assert "<script>" not in desc["html"]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in desc["html"]
    assert "try again in 90 seconds" in desc["html"]
    assert json.loads(desc["json"]) == {
        "error": "maintenance",
        "message": message,
        "retry_after": 90,
    }
    assert nginx_site.check_maintenance(desc) is desc  # what root accepts


def test_defaults_the_health_routes_open_and_the_home_page_to_the_tools_checks_only(
    tmp_path: Path,
) -> None:
    desc = pages.description(settings(tmp_path), None, None, None)
    assert desc["retry_after"] == 600 and pages.DEFAULT_MESSAGE in desc["html"]
    assert desc["open"] == ["/api/flask/health"] and desc["probe"] == ["/api/flask/health", "/"]
    assert desc["prefixes"] == []
    own = settings(
        tmp_path,
        HEALTH_NODE="/healthz",
        MAINTENANCE_OPEN_ROUTES="/api/status,/hooks",
        MAINTENANCE_RETRY_AFTER="30",
    )
    desc = pages.description(own, None, None, None)
    assert desc["open"] == ["/api/flask/health", "/healthz"] and desc["retry_after"] == 30
    assert desc["prefixes"] == ["/api/status", "/hooks"]


def test_a_health_route_with_a_trailing_slash_is_one_root_accepts(tmp_path: Path) -> None:
    s = settings(tmp_path, HEALTH_PY="/api/flask/health/", HEALTH_NODE="/healthz/")
    desc = pages.description(s, None, None, None)
    assert desc["open"] == ["/api/flask/health/", "/healthz/"]
    assert nginx_site.check_maintenance(desc) is desc


@pytest.mark.parametrize("path", ["//health", "/a/./health", "/a/../health", "/a//b"])
def test_a_health_route_nginx_would_rewrite_is_refused_naming_its_key(
    tmp_path: Path, path: str
) -> None:
    with pytest.raises(SettingsError, match=r"HEALTH_NODE .* cannot stay open"):
        pages.description(settings(tmp_path, HEALTH_NODE=path), None, None, None)


def test_the_apps_own_page_gets_the_message_and_retry_after_filled_in(tmp_path: Path) -> None:
    (tmp_path / "maintenance.html").write_text(
        "<p>{{ message }}</p><i>{{ retry_after }}</i>{{ x }}"
    )
    s = settings(tmp_path)
    path, own = pages.own_page(s)
    assert path == str(tmp_path / "maintenance.html")
    html = pages.description(s, "a < b", 120, own)["html"]
    assert html == "<p>a &lt; b</p><i>120</i>{{ x }}"


@pytest.mark.parametrize(
    ("data", "says"),
    [(b"x" * (nginx_site.MAX_PAGE // 2 + 1), "at most 128 KiB"), (b"\xff\xfe", "not UTF-8")],
)
def test_an_own_page_that_cannot_be_served_names_the_key(
    tmp_path: Path, data: bytes, says: str
) -> None:
    (tmp_path / "down.html").write_bytes(data)
    with pytest.raises(SettingsError, match=f"MAINTENANCE_PAGE .*{says}"):
        pages.own_page(settings(tmp_path, MAINTENANCE_PAGE="down.html"))


def test_without_an_own_page_the_tools_is_served(tmp_path: Path) -> None:
    assert pages.own_page(settings(tmp_path)) == (str(tmp_path / "maintenance.html"), None)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (60, "1 minute"),
        (600, "10 minutes"),
        (90, "90 seconds"),
        (3600, "1 hour"),
        (7200, "2 hours"),
        (86400, "1 day"),
    ],
)
def test_retry_after_in_words(seconds: int, words: str) -> None:
    assert pages.wait_words(seconds) == words


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"switch": "sideways"}, "takes `on` or `off`"),
        ({"switch": "on", "retry_after": "0"}, "--retry-after takes whole seconds"),
        ({"switch": "on", "retry_after": "10m"}, "--retry-after takes whole seconds"),
        ({"switch": "on", "message": "  "}, "--message is empty"),
        ({"switch": "on", "message": "a\x1b[2Jb"}, "control characters"),
        ({"switch": "on", "message": "x" * 2001}, "longer than 2000"),
        ({"switch": "off", "message": "x"}, "go with `maintenance on`"),
    ],
)
def test_bad_flags_stop_before_any_host_is_contacted(
    args: dict[str, str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    contacted: list[object] = []
    monkeypatch.setattr(task, "open_host", lambda *a, **k: contacted.append(a))
    with pytest.raises(Exit) as err:
        task.maintenance.body(object(), **args)
    assert says in str(err.value.message) and err.value.code == 2 and contacted == []


def test_a_reload_not_proven_puts_the_files_back_and_reloads_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A reload that took but whose marker did not answer leaves the new files running: after the
    put-back Nginx is reloaded again, so what runs is what the files (and `status`) say."""
    from signalcraft_deploy.host import maintenance as mode

    calls: list[str] = []
    reloads = iter([Exit("Nginx's reload did not take", code=1), {"ok": True}])

    def ask_root(c: object, s: object, verb: str, desc: object) -> str:
        calls.append(verb)
        return "0123456789abcdef"

    def reload(c: object, s: object, **kwargs: object) -> dict:
        calls.append("reload")
        result = next(reloads)
        if isinstance(result, Exit):
            raise result
        return result

    monkeypatch.setattr(mode, "_ask_root", ask_root)
    monkeypatch.setattr(mode, "reload_nginx", reload)
    monkeypatch.setattr(mode, "record_if_on", lambda c, s: None)
    s = settings(tmp_path, NGINX_LISTEN="127.0.0.1:8080")
    with pytest.raises(Exit, match="did not take"):
        mode.turn_on(None, s, pages.description(s, None, None, None), "m")
    assert calls == ["maintenance-on", "reload", "maintenance-off", "reload"]


@pytest.mark.parametrize("served", [True, False])
def test_on_again_keeps_when_it_began_and_a_record_left_over_is_not_taken_for_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served: bool
) -> None:
    """`status` says since when the site has been down: turning it on again (a new message) keeps
    that. A record whose files are gone (the site taken away since) is not the mode's: a new
    `on` starts afresh, and a failed one would not put that stale mode back."""
    from invoke import Result

    from signalcraft_deploy.host import maintenance as mode

    old = {"since": "2026-01-01T00:00:00+00:00", "by": "alice@laptop", "description": {}}
    written: dict[str, str] = {}

    def run(c: object, command: str, warn: bool = False) -> Result:
        return Result(exited=0 if served or not command.startswith("test -e") else 1)

    monkeypatch.setattr(mode, "run", run)
    monkeypatch.setattr(mode, "read_record", lambda c, s: old)
    monkeypatch.setattr(mode, "_ask_root", lambda c, s, verb, desc: "0123456789abcdef")
    monkeypatch.setattr(mode, "reload_nginx", lambda c, s, **kw: {"ok": True})
    monkeypatch.setattr(mode, "write_file", lambda c, path, text, mode: written.update(t=text))
    monkeypatch.setattr(mode, "who", lambda: "bob@ci")
    s = settings(tmp_path)
    mode.turn_on(None, s, pages.description(s, "new words", None, None), "new words")
    record = json.loads(written["t"])
    assert record["message"] == "new words"
    if served:
        assert (record["since"], record["by"]) == (old["since"], old["by"])
    else:
        assert record["since"] != old["since"] and record["by"] == "bob@ci"


def test_an_own_page_the_message_makes_too_big_is_refused_naming_the_key(tmp_path: Path) -> None:
    """Each {{ message }} is replaced: an own page within its limit can pass root's with it."""
    own = "<p>{{ message }}</p>" * 3000  # 60 KiB
    with pytest.raises(
        SettingsError, match=r"MAINTENANCE_PAGE with --message filled in is \d+ KiB"
    ):
        pages.description(settings(tmp_path), "m" * 200, None, own)
