"""The README's first command, run as it is shown, on this machine: `sudo bash tests/host/demo` brings up the sandbox
host and deploys the bundled example app to it for real (setup, then deploy with every default but WHEELS=local), and
the URLs it prints answer through Nginx."""

from __future__ import annotations

import re
import subprocess

from tests.e2e.conftest import REPO, get
from tests.e2e.hosts import MACHINE_FDS, TestHost, as_this_machine

SANDBOX = TestHost(250, port=22)


def test_the_readme_demo_deploys_the_example_app_and_its_urls_answer():
    try:
        done = subprocess.run(as_this_machine(["bash", "tests/host/demo"]), cwd=REPO, capture_output=True, text=True,
                              timeout=900, pass_fds=MACHINE_FDS)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "Open these (through Nginx on the sandbox host):" in done.stdout
        urls = dict(re.findall(r"^  (http://\S+)\s+-> (\S+)$", done.stdout, re.M))
        assert len(urls) == 5 and all(url.startswith(f"http://{SANDBOX.host}/") for url in urls), done.stdout
        for url, app in urls.items():
            status, _, body = get(url)
            assert (status, body.get("app")) == (200, app.lower().replace("node.js", "nodejs")), url
        pm2 = done.stdout[done.stdout.index("Open these"):]
        assert pm2.count("online") == 3 and "signalcraft-python" in pm2 and "signalcraft-nodejs" in pm2, pm2
    finally:
        subprocess.run(as_this_machine(["tests/host/down"]), cwd=REPO, capture_output=True, pass_fds=MACHINE_FDS)
