"""Maintenance mode switched on and off under load: what clients see at each switch.

Against the sandbox host (`sudo tests/host/up`, then its `setup` as bench/README.md shows): it
deploys a copy of the example app as `maintbench` (its own DEPLOY_ROOT, ports and site, the apps'
account `bench` that setup made), then for each run turns maintenance mode on and off with `fab
maintenance`, each switch under a bounded load on the host's address (the home page, a Flask route,
the Flask health route). For each switch it prints the requests, how many were maintenance mode's
503 (with Retry-After: by design), how many failed otherwise (refused, reset, timed out, any other
status: what must be 0), and how long the task took. The app is removed at the end.

    python -m bench.maintenance [--runs 5] [--threads 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO_ROOT, AppRepo, BenchError, Sandbox, load_sandbox
from bench.loadgen import MAINTENANCE, Load, LoadResult

SETTINGS = {
    "APP_NAME": "maintbench",
    "APP_USER": "bench",
    "DEPLOY_ROOT": "/home/ubuntu/maintbench",
    "GUNICORN_BIND": "127.0.0.1:8141",
    "NODE_PORT": "3141",
    "NGINX_LISTEN": "8084",
    "WHEELS": "local",
}


def fab(sandbox: Sandbox, task: str, *args: str, repo: AppRepo | None = None) -> float:
    """Run a task on the sandbox host; its seconds (BenchError if it failed)."""
    cmd = ["fab", "-H", sandbox.target, "-i", sandbox.key, task]
    cmd += ["--source-dir", str(repo.path)] if repo else []
    for key, value in SETTINGS.items():
        cmd += ["--set", f"{key}={value}"]
    start = time.monotonic()
    done = subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(REPO_ROOT),
        env={"KNOWN_HOSTS": sandbox.known_hosts, **_environ()},
    )
    if done.returncode != 0:
        raise BenchError(f"fab {task} {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr}")
    return time.monotonic() - start


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("ENV_FILE", "SOURCE_DIR")}


def switch(sandbox: Sandbox, word: str, threads: int) -> tuple[LoadResult, float]:
    base = f"http://{sandbox.host}:{SETTINGS['NGINX_LISTEN']}"
    urls = [f"{base}/", f"{base}/api/flask/items", f"{base}/api/flask/health"]
    with Load(urls, threads=threads, max_requests=100_000, max_seconds=120) as load:
        time.sleep(1)  # the load runs before the switch
        seconds = fab(sandbox, "maintenance", word)
        time.sleep(1)  # and after it
    return load.result(), seconds


def row(run: int, word: str, result: LoadResult, seconds: float) -> str:
    other = result.failed_not_maintenance
    health = next(counts for url, counts in result.per_url.items() if url.endswith("/health"))
    return (
        f"| {run} | {word} | {result.total} | {result.answers.get(MAINTENANCE, 0)} | {other} |"
        f" {health.failed}/{health.total} | {seconds:.1f} s |"
        f" {', '.join(f'{k}: {v}' for k, v in sorted(result.answers.items()))} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.maintenance", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="on/off cycles (default 5)")
    parser.add_argument("--threads", type=int, default=4, help="load threads (default 4)")
    args = parser.parse_args(argv)
    sandbox = load_sandbox()
    lost = 0
    with tempfile.TemporaryDirectory(prefix="bench-maintenance-") as work:
        repo = AppRepo(Path(work) / "app")
        print(f"deploying maintbench to {sandbox.host} ...", flush=True)
        fab(sandbox, "deploy", repo=repo)
        print(
            "| run | switch | requests | maintenance 503s | failed otherwise | health route failed"
            " | task | answers |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        try:
            for run in range(1, args.runs + 1):
                for word in ("on", "off"):
                    result, seconds = switch(sandbox, word, args.threads)
                    lost += result.failed_not_maintenance
                    print(row(run, word, result, seconds), flush=True)
                    for sample in result.samples[:3] if result.failed_not_maintenance else []:
                        print(f"  failed: {sample}", file=sys.stderr)
        finally:
            fab(sandbox, "remove", "--purge", "--confirm", SETTINGS["APP_NAME"])
    print(f"requests failed other than maintenance mode's 503: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
