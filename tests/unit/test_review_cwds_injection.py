"""Review proof (au-review): an app process's working folder injects sections into the deploy user's
facts.

host/facts.py's facts script prints the apps' account's working folders with `find ... -printf '%p
%l\\n'` (sec cwds, run as that account through the door). `%l` is printed raw: a folder name holding
a newline starts a new line, and a line starting with MARK starts a section (split_sections appends
to a section of that name). `site_defaults` is then json-loaded and `steps/one_host.read_host`
applies it (oldsite.apply) to every setting still at its default: PYTHON (the program the deploy
user runs remote/*.py with), APP_USER, PM2, ... An app sets PYTHON to a program of its own and the
deploy user runs it at the next deploy. No race: the process only has to sit in that folder.

What find prints for an app process whose cwd is /tmp/<A>/tmp/evilpy/<B> (A and B hold newlines) is
reproduced here; tests/e2e/test_review_door_stdin.py::test_..._cwd... runs it for real."""

from __future__ import annotations

from signalcraft_deploy.core import oldsite
from signalcraft_deploy.core.settings import load_settings
from signalcraft_deploy.host.facts import MARK, parse_facts

A = f'x\n{MARK}site_defaults\n{{"PYTHON": "'
B = f'python3"}}\n{MARK}junk'
CWD = f"/tmp/{A}/tmp/evilpy/{B}"


def test_an_app_processes_folder_name_sets_the_python_the_deploy_user_runs() -> None:
    s = load_settings(environ={}, overrides={})
    output = "\n".join(
        [
            f"\n{MARK}uid",
            "1000",
            f"\n{MARK}site_defaults",  # no .deploy/site-defaults.json: the real section is empty
            f"\n{MARK}cwds",
            f"/proc/4242/cwd {CWD}",
            "/proc/4243/cwd /var/lib/signalcraft-apps/signalcraft",
            f"\n{MARK}pm2",
            "[]",
        ]
    )
    facts = parse_facts(output)
    applied = oldsite.apply(s, facts.site_defaults, "site-defaults.json")
    assert applied.python == s.python, (facts.site_defaults, applied.python)
