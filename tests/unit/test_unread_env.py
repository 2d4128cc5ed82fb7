"""A `.env` of deploy settings beside init's deploy.env is not read: every task says so, naming the
file that is read (and the keys, never their values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalcraft_deploy.host.connect import settings_for


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in ("ENV_FILE", "NODE_PORT", "APP_NAME", "NODE_ENV"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "deploy.env").write_text("APP_NAME=shop\n")
    return tmp_path


def test_a_dotenv_of_deploy_settings_beside_deploy_env_is_pointed_out(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (app / ".env").write_text("NODE_PORT=3100\nGUNICORN_BIND=127.0.0.1:8100\nSECRET=hunter2-x\n")
    s = settings_for(str(app / "deploy.env"), None)
    assert s.node_port != 3100  # not read
    err = capsys.readouterr().err
    assert err == (
        f"warning: {app / '.env'} sets deploy settings (GUNICORN_BIND, NODE_PORT) that are not"
        f" read: the settings come from {app / 'deploy.env'}. Move them there, or name"
        f" {app / '.env'} with ENV_FILE or --env-file.\n"
    )
    assert "hunter2" not in err and "3100" not in err


@pytest.mark.parametrize(
    "dotenv",
    ["SECRET_KEY=abc\nDATABASE_URL=postgres://x\n", "NODE_ENV=production\n", None],
    ids=["the-apps-own-variables", "node-env-is-the-apps-too", "no-dotenv"],
)
def test_an_apps_own_dotenv_draws_no_warning(
    app: Path, capsys: pytest.CaptureFixture[str], dotenv: str | None
) -> None:
    if dotenv is not None:
        (app / ".env").write_text(dotenv)
    settings_for(str(app / "deploy.env"), None)
    assert capsys.readouterr().err == ""


def test_the_dotenv_that_is_read_draws_no_warning(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (app / ".env").write_text("NODE_PORT=3100\n")
    assert settings_for(None, None).node_port == 3100
    assert capsys.readouterr().err == ""
