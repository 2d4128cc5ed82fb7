"""The README's first command, run as it is shown, on this machine: `sudo bash tests/host/demo`
brings up the sandbox host and deploys the bundled example app to it for real (setup, then deploy
with every default but WHEELS=local), and the URLs it prints answer through Nginx.

It acts as this machine, not as a worker's host, so tests/e2e/run runs it in a pytest of its own
beside the workers.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.e2e.conftest import REPO, get

SANDBOX_ADDRESS = "198.18.250.2"  # tests/host/up's host
# The README's lines (tests/unit/test_docs.py holds them to it), run as root without `sudo`.
DEMO = "sudo bash tests/host/demo"
DOWN = "sudo bash tests/host/down"
DOCUMENTED = (DEMO, DOWN)


def as_root(command: str) -> list[str]:
    return command.removeprefix("sudo ").split()


@pytest.mark.skipif(
    bool(os.environ.get("TESTHOST")), reason="runs on this machine: tests/e2e/run runs it apart"
)
def test_the_readme_demo_deploys_the_example_app_and_its_urls_answer():
    try:
        done = subprocess.run(as_root(DEMO), cwd=REPO, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "Open these (through Nginx on the sandbox host):" in done.stdout
        urls = dict(re.findall(r"^  (http://\S+)\s+-> (\S+)$", done.stdout, re.M))
        assert len(urls) == 5 and all(
            url.startswith(f"http://{SANDBOX_ADDRESS}/") for url in urls
        ), done.stdout
        for url, app in urls.items():
            status, _, body = get(url)
            assert (status, body.get("app")) == (
                200,
                {"Node.js": "nodejs", "Flask": "flask"}[app],
            ), url
        pm2 = done.stdout[done.stdout.index("Open these") :]
        assert (
            pm2.count(" online ") == 3
            and "signalcraft-python" in pm2
            and "signalcraft-nodejs" in pm2
        ), pm2
    finally:
        subprocess.run(as_root(DOWN), cwd=REPO, capture_output=True)
