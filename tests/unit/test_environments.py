"""Environments: deploy.NAME.env read over deploy.env, chosen by --environment or SIGNALCRAFT_ENV;
each value's origin names the file and line it came from, and every task that reads settings takes
the flag."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from signalcraft_deploy.collection import ns
from signalcraft_deploy.core.settings import SettingsError, load_settings
from signalcraft_deploy.core.source import tool_files
from signalcraft_deploy.tasks.settings import effective_text, files_text


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "deploy.env").write_text(
        "APP_NAME=shop\nDEPLOY_ROOT=/home/ubuntu/shop\nNODE_PORT=3000\nHEALTH_TIMEOUT=20\n"
    )
    (tmp_path / "deploy.staging.env").write_text(
        "# staging lives beside production on one host\n"
        "APP_NAME=shop-staging\nDEPLOY_ROOT=/home/ubuntu/shop-staging\nNODE_PORT=3100\n"
        "GUNICORN_BIND=127.0.0.1:8101\nNGINX_LISTEN=8080\n"
    )
    (tmp_path / "deploy.production.env").write_text("NGINX_LISTEN=80\n")
    return tmp_path


def load(app: Path, environ: dict[str, str] | None = None, **kwargs: str):
    return load_settings(
        env_file=str(app / "deploy.env"), environ=environ or {}, cwd=str(app), **kwargs
    )


def test_the_environment_s_file_wins_over_the_shared_one_key_by_key(app: Path):
    s = load(app, environment="staging")
    assert (s.app_name, s.deploy_root, s.node_port) == (
        "shop-staging",
        "/home/ubuntu/shop-staging",
        3100,
    )
    assert s.health_timeout == 20  # not in staging's file: the shared one's
    assert s.origins["APP_NAME"] == f"{app}/deploy.staging.env:2"
    assert s.origins["HEALTH_TIMEOUT"] == f"{app}/deploy.env:4"
    assert (s.environment, s.environment_file) == ("staging", str(app / "deploy.staging.env"))
    shared = load(app)
    assert (shared.app_name, shared.environment, shared.environment_file) == ("shop", None, None)


def test_the_flag_wins_over_signalcraft_env_and_variables_and_set_win_over_both(app: Path):
    chosen = load(app, environ={"SIGNALCRAFT_ENV": "production"})
    assert (chosen.environment, chosen.app_name) == ("production", "shop")
    s = load(
        app, environ={"SIGNALCRAFT_ENV": "production", "NODE_PORT": "3200"}, environment="staging"
    )
    assert (s.environment, s.node_port, s.origins["NODE_PORT"]) == ("staging", 3200, "environment")
    s = load_settings(
        env_file=str(app / "deploy.env"),
        environ={},
        cwd=str(app),
        environment="staging",
        overrides={"NODE_PORT": "3300"},
    )
    assert (s.node_port, s.origins["NODE_PORT"]) == (3300, "flag --set")


def test_an_environment_without_its_file_is_refused_naming_the_ones_there(app: Path):
    with pytest.raises(SettingsError) as err:
        load(app, environment="prod")
    message = str(err.value)
    assert "environment 'prod' (flag --environment)" in message
    assert f"{app}/deploy.prod.env does not exist" in message
    assert "(environments beside deploy.env: production, staging)" in message
    with pytest.raises(SettingsError) as err:
        load(app, environ={"SIGNALCRAFT_ENV": "../production"})
    assert "environment (SIGNALCRAFT_ENV): found '../production'" in str(err.value)


def test_a_dot_env_is_layered_as_dot_env_dot_name(tmp_path: Path):
    (tmp_path / ".env").write_text("APP_NAME=shop\n")
    (tmp_path / ".env.staging").write_text("APP_NAME=shop-staging\n")
    s = load_settings(environ={"SIGNALCRAFT_ENV": "staging"}, cwd=str(tmp_path))
    assert (s.app_name, s.origins["APP_NAME"]) == ("shop-staging", f"{tmp_path}/.env.staging:1")


def test_the_environment_s_file_is_the_tool_s_own_not_the_app_s(tmp_path: Path):
    (tmp_path / "settings.env").write_text("APP_NAME=shop\n")
    (tmp_path / "settings.staging.env").write_text("APP_NAME=shop-staging\n")
    s = load_settings(
        env_file="settings.env",
        environ={},
        cwd=str(tmp_path),
        environment="staging",
        overrides={"SOURCE_DIR": str(tmp_path)},
    )
    assert {"/settings.env", "/settings.staging.env"} <= set(tool_files(s))


def test_settings_says_which_files_gave_each_value(app: Path):
    s = load(app, environment="staging")
    assert files_text(s) == f"environment staging: {app}/deploy.staging.env over {app}/deploy.env"
    row = next(line for line in effective_text(s).splitlines() if line.startswith("NODE_PORT "))
    assert row.split()[1:] == ["3100", f"{app}/deploy.staging.env:4"]
    assert files_text(load(app)) is None


def test_every_task_that_reads_settings_takes_environment():
    reading = []
    for name in ns.task_names:  # the signature: get_arguments() uses the help texts up
        flags = inspect.signature(ns[name].body).parameters
        if "env_file" in flags:
            assert "environment" in flags, name
            reading.append(name)
    assert {"deploy", "rollback", "status", "settings", "freeze", "setup"} <= set(reading)


def test_an_empty_environment_flag_is_refused_not_read_as_none(app: Path):
    """`--environment "$ENV"` with ENV unset in a script: the flag was given, empty; reading the
    shared settings alone (production's, say) would deploy them where staging was meant."""
    with pytest.raises(SettingsError) as bad:
        load(app, environment="")
    assert "flag --environment" in str(bad.value)
    with pytest.raises(SettingsError):
        load(app, environ={"SIGNALCRAFT_ENV": "production"}, environment="")
