"""The masker: every value of the app's .env and REPO_URL's password become *** in what the tool
prints."""

from __future__ import annotations

from pathlib import Path

from signalcraft_deploy.core.secrets import env_values, mask, masked, secret_values
from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy.remote.masking import MASK

ENV = """# the app's secrets
DATABASE_URL=postgres://app:p@ss w0rd!@db.internal:5432/app
export SECRET_KEY='k3y-with-quotes'
API_TOKEN="tok_123456789"
FLASK_DEBUG=0
PORT=5000
EMPTY=
SHORT=abc
NOTE=plain value # a comment
"""


def test_env_values_are_read_as_the_app_reads_them() -> None:
    assert env_values(ENV) == [
        "postgres://app:p@ss w0rd!@db.internal:5432/app",
        "k3y-with-quotes",
        "tok_123456789",
        "0",
        "5000",
        "",
        "abc",
        "plain value",
    ]


def test_long_values_are_secrets_short_ones_and_plain_numbers_are_not() -> None:
    found = secret_values(ENV, None)
    assert {
        "k3y-with-quotes",
        "tok_123456789",
        "plain value",
        "postgres://app:p@ss w0rd!@db.internal:5432/app",
    } <= found
    assert not {"0", "5000", "", "abc"} & found


def test_every_form_of_a_value_is_masked() -> None:
    found = secret_values(ENV, None)
    line = (
        "sqlalchemy.exc.OperationalError: could not connect to postgres://app:p@ss"
        " w0rd!@db.internal:5432/app; as a form field: p%40ss+w0rd%21; encoded:"
        ' postgres%3A%2F%2Fapp%3Ap%40ss%20w0rd%21%40db.internal%3A5432%2Fapp and in JSON: {"key":'
        ' "k3y-with-quotes"}; glued: xxtok_123456789yy'
    )
    out = mask(line, found)
    for leak in ("p@ss w0rd!", "p%40ss", "k3y-with-quotes", "tok_123456789", "p%40ss%20w0rd"):
        assert leak not in out, out
    assert out.startswith(
        "sqlalchemy.exc.OperationalError: could not connect to ***;"
    )  # the whole URL, not a piece
    assert "glued: xx***yy" in out and "port 5432" not in out


def test_a_url_password_alone_is_masked_too() -> None:
    found = secret_values("DATABASE_URL=postgres://app:hunter2-db@db/app\n", None)
    assert (
        mask('FATAL: password "hunter2-db" rejected', found) == f'FATAL: password "{MASK}" rejected'
    )


def test_repo_url_credentials_are_masked(tmp_path: Path) -> None:
    url = "https://deploy:ghp_T0ken99@github.com/org/app.git"
    env = tmp_path / "app.env"
    env.write_text("SECRET_KEY=s3cr3t-value\n")
    s = load_settings(
        environ={}, overrides={"SOURCE": "git", "REPO_URL": url, "APP_ENV_FILE": str(env)}
    )
    assert (
        masked(s, "fatal: https://deploy:ghp_T0ken99@github.com and s3cr3t-value")
        == "fatal: https://deploy:***@github.com and ***"
    )
    env.write_text("SECRET_KEY=another-value\n")  # the file is read again once it changed
    assert masked(s, "another-value s3cr3t-value") == "*** s3cr3t-value"


def test_no_secrets_change_nothing() -> None:
    s = load_settings(environ={}, overrides={})
    assert masked(s, "Traceback: RuntimeError: boom") == "Traceback: RuntimeError: boom"


def test_plain_words_stay_readable_unless_their_key_names_a_secret() -> None:
    found = secret_values(
        "FLASK_ENV=production\nFEATURE_X=true\nLOG_LEVEL=info\nADMIN_PASSWORD=letmein\n"
        "SECRET_KEY=hunter\nDB_HOST=db.internal\nMOTTO=correcthorsebatterystaple\n",
        None,
    )
    assert (
        mask("first deploy in production: true, info", found)
        == "first deploy in production: true, info"
    )
    assert mask("letmein hunter db.internal correcthorsebatterystaple", found) == "*** *** *** ***"


def test_what_the_host_sent_is_shown_to_a_terminal_without_driving_it(tmp_path: Path) -> None:
    """The apps' own account writes their logs and hook output: a line of it may not set the
    operator's terminal's title or clipboard, clear it or move its cursor. Colours are dropped (PM2
    colours some lines even into a pipe), every other control character is written out; tabs,
    newlines and the secrets' masking stay."""
    (tmp_path / "app.env").write_text(ENV)
    s = load_settings(
        environ={}, cwd=str(tmp_path), overrides={"APP_ENV_FILE": str(tmp_path / "app.env")}
    )
    line = (
        "\x1b[1m\x1b[90m[TAILING]\x1b[39m\x1b[22m tok_123\x1b[0m456789\r\n"
        "\x1b]0;owned\x07\x1b]52;c;Y3VybCB4fHNo\x07\x1b[2J\x1b[H\tnext\x9b2J \x7f\x00\rover"
    )
    assert (
        masked(s, line)
        == f"[TAILING] {MASK}\n^[]0;owned^G^[]52;c;Y3VybCB4fHNo^G^[[2J^[[H\tnext\\x9b2J ^?^@^Mover"
    )
    assert masked(s, "plain\ttext\nand more") == "plain\ttext\nand more"


def test_values_are_masked_as_the_processes_get_them() -> None:
    """The processes get python-dotenv's reading of APP_ENV_FILE (escapes, a multi-line value,
    ${NAME} resolved, a trailing comment cut): what an app prints of it is masked too."""
    text = (
        'A="line1\\nline2-secret"\n'
        'C="quote\\"inside-x"\n'
        "E=abc-defg1 # a comment\n"
        'F="multi\nline-secret-value"\n'
        "G=${HOME}x-secret\n"
        'H="tab\\there-secret"\n'
        'K="-----BEGIN KEY-----\\nMIIEsecretbody\\n-----END KEY-----"\n'
    )
    shown = mask(
        'line1\nline2-secret quote"inside-x abc-defg1 multi\nline-secret-value x-secret'
        " tab\there-secret\nMIIEsecretbody\n",
        secret_values(text, None),
    )
    for part in ("line2-secret", "inside-x", "abc-defg1", "line-secret-value", "x-secret", "there"):
        assert part not in shown
    assert "MIIEsecretbody" not in shown
