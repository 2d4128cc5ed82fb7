"""Properties: any settings validation accepts render into files their programs accept; anything
unsafe is refused.

Valid settings are generated from the character sets settings.py allows; each rendered
gunicorn.conf.py must run as Python with the generated values, ecosystem.config.js must pass `node
--check` and load under Node with them, and the Nginx site must pass `nginx -t`. Bad values (quotes,
';', '$', backticks, spaces, newlines, braces, ...) injected into the keys that reach shell, Python,
JavaScript or Nginx text must be refused by `load_settings`, so no rendered file can ever hold them.
"""

from __future__ import annotations

import ast
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from signalcraft_deploy.core.render import (
    render_ecosystem,
    render_gunicorn_conf,
    render_nginx_site,
    venv_dir,
)
from signalcraft_deploy.core.settings import Settings, SettingsError, load_settings

ROUTE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"
REQUIREMENTS = "flask==3.0.3\ngunicorn==23.0.0\n"


def slow(max_examples: int) -> settings:
    """Examples that start a process each (node, nginx): no per-example deadline, a small count."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@pytest.fixture(scope="module")
def cwd(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty directory: no .env in it, so only the generated values count."""
    return str(tmp_path_factory.mktemp("cwd"))


def load(cwd: str, overrides: dict[str, str]) -> Settings:
    return load_settings(overrides=overrides, environ={}, cwd=cwd)


# --- Strategies for valid values
# --------------------------------------------------------------------------------

app_names = st.from_regex(r"[a-z][a-z0-9-]{0,39}", fullmatch=True)
segments = st.text(alphabet=ROUTE_ALPHABET, min_size=1, max_size=12).filter(
    lambda x: x not in (".", "..")
)
routes = st.lists(segments, min_size=1, max_size=3).map("/".join)
route_lists = st.lists(routes, min_size=1, max_size=5, unique=True)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
host_names = st.lists(labels, min_size=1, max_size=4).map(".".join)
server_name = st.one_of(
    st.just("_"),
    st.lists(
        st.one_of(
            host_names,
            host_names.filter(lambda h: "." in h).map(lambda h: "*." + h),
            host_names.map(lambda h: h + ".*"),
        ),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(" ".join),
)
py_idents = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
wsgi_apps = st.builds(
    lambda mod, attr, call: f"{'.'.join(mod)}:{attr}{'()' if call else ''}",
    st.lists(py_idents, min_size=1, max_size=3),
    py_idents,
    st.booleans(),
)
node_scripts = st.from_regex(
    r"[a-z][a-z0-9_]{0,10}(/[a-z][a-z0-9_.-]{0,10}){0,2}\.js", fullmatch=True
)


@st.composite
def valid_settings(draw: st.DrawFn) -> dict[str, str]:
    name = draw(app_names)
    bind, node, listen = draw(
        st.lists(st.integers(1024, 65000), min_size=3, max_size=3, unique=True)
    )
    assume(
        len({bind, bind + 1, node, node + 1, listen}) == 5
    )  # the handover ports default to each app's port + 1
    py_routes = draw(route_lists)
    site_dir = draw(st.sampled_from(["/etc/nginx/sites-available/{}", "/etc/nginx/conf.d/{}.conf"]))
    return {
        "APP_NAME": name,
        "DEPLOY_ROOT": (
            f"{draw(st.sampled_from(['/srv', '/opt', '/home/ubuntu', '/var/www']))}/{draw(app_names)}"
        ),
        "GUNICORN_BIND": f"127.0.0.1:{bind}",
        "NODE_PORT": str(node),
        "NGINX_LISTEN": str(listen),
        "GUNICORN_WORKERS": draw(st.one_of(st.just("auto"), st.integers(1, 256).map(str))),
        "GUNICORN_TIMEOUT": str(draw(st.integers(1, 86400))),
        "GUNICORN_GRACEFUL_TIMEOUT": str(draw(st.integers(1, 3600))),
        "NODE_INSTANCES": str(draw(st.integers(1, 64))),
        "WSGI_APP": draw(wsgi_apps),
        "NODE_SCRIPT": draw(node_scripts),
        "PY_ROUTES": ",".join(py_routes),
        "HEALTH_PY": f"/{draw(st.sampled_from(py_routes))}/{draw(segments)}",
        "NGINX_SITE": site_dir.format(name),
        "SERVER_NAME": draw(server_name),
    }


def exec_conf(text: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)
    return namespace


# --- Valid settings render into files their programs accept
# ---------------------------------------------------


@slow(60)
@given(values=valid_settings())
def test_valid_settings_load_and_gunicorn_conf_runs(cwd: str, values: dict[str, str]) -> None:
    s = load(cwd, values)
    assert s.py_routes == tuple(values["PY_ROUTES"].split(","))
    text = render_gunicorn_conf(s)
    ast.parse(text)
    conf = exec_conf(text)
    assert conf["bind"] == [values["GUNICORN_BIND"]]
    assert conf["wsgi_app"] == values["WSGI_APP"]
    assert conf["chdir"] == f"{values['DEPLOY_ROOT']}/current"
    assert conf["timeout"] == int(values["GUNICORN_TIMEOUT"])
    workers = values["GUNICORN_WORKERS"]
    assert conf["workers"] == (
        multiprocessing.cpu_count() * 2 + 1 if workers == "auto" else int(workers)
    )


@slow(20)
@given(values=valid_settings())
def test_valid_settings_ecosystem_passes_node(
    cwd: str, node_tester, values: dict[str, str]
) -> None:
    s = load(cwd, values)
    text = render_ecosystem(s, venv_dir(s, REQUIREMENTS))
    result = node_tester.check(text)
    assert result.ok, result.output
    apps = {a["name"]: a for a in node_tester.load(text)["apps"]}
    node = apps[f"{values['APP_NAME']}-nodejs"]
    assert node["instances"] == int(values["NODE_INSTANCES"])
    assert node["env"]["PORT"] == values["NODE_PORT"]
    assert node["script"] == f"{values['DEPLOY_ROOT']}/current/{values['NODE_SCRIPT']}"
    assert apps[f"{values['APP_NAME']}-python"]["script"].startswith(
        f"{values['DEPLOY_ROOT']}/venvs/"
    )


@slow(15)
@given(values=valid_settings())
def test_valid_settings_nginx_site_passes_nginx_t(
    cwd: str, nginx_tester, values: dict[str, str]
) -> None:
    s = load(cwd, values)
    result = nginx_tester.check(render_nginx_site(s))
    assert result.ok, result.output


# --- Bad values are refused
# -------------------------------------------------------------------------------------

BAD_CHARS = [
    "'",
    '"',
    ";",
    "$",
    "`",
    " ",
    "\n",
    "{",
    "}",
    "\\",
    "|",
    "&",
    "<",
    ">",
    "#",
    "\t",
    "\r",
    "\x00",
]

# A valid value to spoil, per key. Single tokens: a space inserted between two server names, or next
# to the comma between two routes, would be a legitimate separator.
VALID_BASE: dict[str, st.SearchStrategy[str]] = {
    "APP_NAME": app_names,
    "PY_ROUTES": routes,
    "DEPLOY_ROOT": app_names.map(lambda n: f"/srv/{n}"),
    "SERVER_NAME": host_names,
    "WSGI_APP": wsgi_apps,
    "NODE_SCRIPT": node_scripts,
}
# Keys where a single space is a separator, not an error.
SPACE_OK = {"SERVER_NAME"}


@st.composite
def spoiled(draw: st.DrawFn, key: str) -> str:
    bad = [c for c in BAD_CHARS if not (c == " " and key in SPACE_OK)]
    # Either a valid value with bad characters inserted, or any text at all around one bad
    # character.
    if draw(st.booleans()):
        value = draw(VALID_BASE[key])
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(value)))
            value = value[:at] + draw(st.sampled_from(bad)) + value[at:]
        return value
    bad_no_space = [
        c for c in bad if c != " "
    ]  # arbitrary text may hold commas and spaces that separate
    return (
        draw(st.text(max_size=15))
        + draw(st.sampled_from(bad_no_space))
        + draw(st.text(max_size=15))
    )


@pytest.mark.parametrize("key", list(VALID_BASE))
def test_bad_characters_are_refused(cwd: str, key: str) -> None:
    @settings(max_examples=80, deadline=None)
    @given(value=spoiled(key), via=st.sampled_from(["environment", "flag --set"]))
    def check(value: str, via: str) -> None:
        given_as = {key: value}
        with pytest.raises(SettingsError) as err:
            if via == "environment":
                load_settings(environ=given_as, cwd=cwd)
            else:
                load_settings(overrides=given_as, environ={}, cwd=cwd)
        assert str(err.value).startswith(f"{key} ({via})"), str(err.value)

    check()


@pytest.mark.parametrize("key", list(VALID_BASE))
def test_valid_bases_are_accepted(cwd: str, key: str) -> None:
    """Guard for the test above: the values it spoils are accepted unspoiled, so the bad characters
    cause the refusal."""

    @settings(max_examples=40, deadline=None)
    @given(value=VALID_BASE[key])
    def check(value: str) -> None:
        extra = {"HEALTH_PY": f"/{value}/health"} if key == "PY_ROUTES" else {}
        load(cwd, {key: value, **extra})

    check()


def test_rendered_files_hold_no_injected_text(tmp_path: Path) -> None:
    """End to end for one hostile value per key: it never gets as far as a rendered file."""
    hostile = "x'; touch /tmp/pwned; echo '"
    for key in VALID_BASE:
        with pytest.raises(SettingsError):
            load_settings(overrides={key: hostile}, environ={}, cwd=str(tmp_path))
