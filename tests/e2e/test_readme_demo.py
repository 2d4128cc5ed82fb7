"""The README's first command, run as it is shown: `sudo bash tests/host/demo` deploys the bundled example app for real to
the sandbox host (setup, then deploy with every default), and the URLs it prints answer through Nginx."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import REPO, Profile, clean_host, get, pm2_apps

DEMO = Profile("signalcraft", "/home/ubuntu/signalcraft", 8001, 3000, 80, defaults=True)  # every default


def test_the_readme_demo_deploys_the_example_app_and_its_urls_answer(sandbox):
    clean_host(DEMO)
    try:
        done = subprocess.run(["bash", "tests/host/demo"], cwd=REPO, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "Open these (through Nginx on the sandbox host):" in done.stdout
        assert get("http://127.0.0.1/")[2].get("app") == "nodejs"
        for route in ("api/ai", "api/iot", "api/lightweight-analyze", "api/flask/health"):
            status, _, body = get(f"http://127.0.0.1/{route}")
            assert (status, body.get("app")) == (200, "flask"), route
        assert {name: [p["status"] for p in procs] for name, procs in pm2_apps("signalcraft").items()} == {
            "signalcraft-python": ["online"], "signalcraft-nodejs": ["online", "online"]}
    finally:
        clean_host(DEMO)
