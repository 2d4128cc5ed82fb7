"""Fleet deploys: wall time of `fab -H web1,...,webN deploy` for 1, 2 and 3 hosts, and failed requests.

    sudo python -m bench.fleet              # 5 runs each (median), about 5 minutes on 2 CPUs
    sudo python -m bench.fleet --runs 1     # a quick look

Uses tests/host/fleet-up's hosts (brought up if needed; each host is wiped of this app first).
One first deploy to every host (not measured), then `--runs` rounds; each round, for N = 1, 2, 3
hosts in turn: a code change (a new commit of app.py: a Gunicorn HUP on every host) deployed to
web1..webN under a bounded load through each of those hosts' own Nginx (198.18.K.2; 2 threads in
all, round-robin over the hosts), then a no-op. The host counts take turns within each round so
that a machine that gets slower or faster over the minutes (other tenants' CPU) weighs on every
count alike. Prints the medians, the ratio to one host, and the failed requests per host.
Targets (issue 17): 3 hosts at most 1.6 times one host for a code change and 1.3 times for a
no-op; 0 failed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, AppRepo
from bench.loadgen import Load

STATE = REPO_ROOT / ".fleet"
ROOT = "/home/ubuntu/signalcraft"
# The same load whatever the host count (round-robin over every host's URLs): the hosts share this
# machine's CPUs, and a load that grew with them would slow each deploy for that reason alone.
LOAD_THREADS = 2
SETTINGS = {"WHEELS": "local", "GUNICORN_WORKERS": "2", "HEALTH_TIMEOUT": "30"}


def on_host(k: int, cmd: str, user: str = "ubuntu") -> str:
    pid = (STATE / f"host{k}.pid").read_text().strip()
    as_user = ["sudo", "-u", user, "-H"] if user != "root" else []
    return subprocess.run(["nsenter", "-t", pid, "-m", "-p", "-n", "--", *as_user, "bash", "-c", cmd],
                          capture_output=True, text=True, timeout=60).stdout


def wipe(k: int) -> None:
    on_host(k, "pm2 kill >/dev/null 2>&1; rm -rf ~/signalcraft ~/.pm2")
    on_host(k, "rm -f /etc/nginx/sites-enabled/signalcraft /etc/nginx/sites-available/signalcraft*; "
            "ln -sfn /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default; nginx -s reload", user="root")


def deploy(repo: AppRepo, n: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    cmd = ["fab", "-S", str(STATE / "ssh_config"), "-H", ",".join(f"web{k}" for k in range(1, n + 1)), "deploy",
           "--known-hosts", str(STATE / "known_hosts"), "--source-dir", str(repo.path)]
    for key, value in SETTINGS.items():
        cmd += ["--set", f"{key}={value}"]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(REPO_ROOT))
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"deploy to {n} host(s) failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return seconds, done


def code_change(repo: AppRepo, counter: list[int]) -> None:
    counter[0] += 1
    text = repo.read("app.py")
    marker = "# bench.fleet change"
    lines = [line for line in text.splitlines() if not line.startswith(marker)]
    repo.write("app.py", "\n".join(lines) + f"\n{marker} {counter[0]}\n")
    repo.commit(f"change {counter[0]}")


def measure(repo: AppRepo, n: int, counter: list[int], row: dict[str, Any]) -> None:
    """One code change (under load) and one no-op on web1..webN, added to `row`."""
    code_change(repo, counter)
    urls = {k: [f"http://198.18.{k}.2/api/ai/load", f"http://198.18.{k}.2/"] for k in range(1, n + 1)}
    load = Load([u for pair in urls.values() for u in pair], threads=LOAD_THREADS, max_requests=40_000, max_seconds=120)
    load.start()
    seconds, _ = deploy(repo, n)
    result = load.stop()
    for k, pair in urls.items():
        row["failed"][k] += sum(result.per_url[u].failed for u in pair)
    row["changes"].append(seconds)
    row["noops"].append(deploy(repo, n)[0])


def table(rows: list[dict[str, object]]) -> str:
    one = rows[0]
    out = ["| hosts | code change (median) | x one host | no-op (median) | x one host | failed requests per host |",
           "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        failed = ", ".join(f"web{k}: {v}" for k, v in r["failed"].items())  # type: ignore[attr-defined]
        out.append(f"| {r['n']} | {r['change']:.2f} s | {r['change'] / one['change']:.2f} | {r['noop']:.2f} s | "  # type: ignore[operator]
                   f"{r['noop'] / one['noop']:.2f} | {failed} |")  # type: ignore[operator]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="code changes and no-ops per host count (median of these)")
    parser.add_argument("--hosts", type=int, default=3, help="largest host count (1..N)")
    args = parser.parse_args(argv)
    subprocess.run([str(REPO_ROOT / "tests/host/fleet-up"), str(args.hosts)], check=True, capture_output=True, timeout=600)
    for k in range(1, args.hosts + 1):
        wipe(k)
    counter = [0]
    rows: list[dict[str, Any]] = [{"n": n, "changes": [], "noops": [], "failed": dict.fromkeys(range(1, n + 1), 0)}
                                  for n in range(1, args.hosts + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        repo = AppRepo(Path(tmp) / "app")
        deploy(repo, args.hosts)  # every host gets the app (not measured)
        for round_no in range(1, args.runs + 1):
            for row in rows:
                measure(repo, row["n"], counter, row)
            print(f"round {round_no}: " + "; ".join(
                f"{r['n']} host(s) {r['changes'][-1]:.2f} s / no-op {r['noops'][-1]:.2f} s" for r in rows), flush=True)
    for r in rows:
        r["change"], r["noop"] = statistics.median(r["changes"]), statistics.median(r["noops"])
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
