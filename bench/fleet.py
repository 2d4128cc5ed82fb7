"""Fleet deploys: wall time of `fab -H web1,...,webN deploy` for 1, 2 and 3 hosts, and failed
requests.

    sudo python -m bench.fleet                  # both CPU models, 5 rounds each (median): about 3 minutes
    sudo python -m bench.fleet --host-cpu 0     # only with the hosts sharing this machine's CPUs
    sudo python -m bench.fleet --runs 1         # a quick look

Uses tests/host/fleet-up's hosts, the isolated test hosts h1..hN at 198.18.K.2 (brought up if
needed; each host is wiped of this app first). A host of those numbers that is up but was not
started by fleet-up into .fleet (another user's, e.g. the e2e tests' h1..h4) is refused, not wiped:
stop it or wait. Deploys use WHEELS=local (the hosts reach no package index); requests go only to
the hosts' 198.18.K.2 (bench.loadgen refuses anything but test hosts' addresses and loopback). One
first deploy to every host (not measured), then, for each CPU model, `--runs` rounds; each round,
for N = 1, 2, 3 hosts in turn: a code change (a new commit of app.py: a Gunicorn HUP on every host)
deployed to web1..webN under load, then a no-op. The host counts take turns within each round so
that a machine that gets slower or faster over the minutes (other tenants' CPU) weighs on every
count alike. Prints, per model, the medians, the ratio to one host, and the failed requests per
host.

The load: `--rate` requests a second to each deployed host through its own Nginx (198.18.K.2),
paced, as live traffic is; `--rate 0` instead sends 2 threads' requests back to back, round-robin
over the hosts (a load that takes whatever CPU is left).

The CPU models (`--host-cpu`, a list): a share such as 0.5 holds each host's processes to half a
CPU (bench/hostcpu.py), so that each host is a machine of its own and a third host adds its own
CPU, as on EC2; 0 leaves the hosts sharing this machine's CPUs, so that three hosts' deploys run
on the CPUs one host had.

Targets: 3 hosts at most 1.6 times one host for a code change and 1.3 times for a
no-op; 0 failed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, AppRepo
from bench.hostcpu import HostCpu
from bench.loadgen import Load

STATE = REPO_ROOT / ".fleet"
ROOT = "/home/ubuntu/signalcraft"
# --rate 0: the same load whatever the host count (round-robin over every host's URLs): a load that
# grew with the hosts would slow each deploy for that reason alone when the hosts share the CPUs.
LOAD_THREADS = 2
SETTINGS = {"WHEELS": "local", "GUNICORN_WORKERS": "2", "HEALTH_TIMEOUT": "30"}


def foreign_hosts(hosts: int) -> list[str]:
    """Hosts h1..h`hosts` that are up but not fleet-up's (no .fleet/hostK.pid naming their first
    process)."""
    listed = subprocess.run(
        [str(REPO_ROOT / "tests/host/testhost"), "list"], capture_output=True, text=True, timeout=60
    )
    foreign = []
    for line in listed.stdout.splitlines():  # "hK 198.18.K.2 PID"
        name, _, pid = (line.split() + ["", "", ""])[:3]
        k = int(name[1:]) if name[1:].isdigit() else 0
        mine = STATE / f"host{k}.pid"
        if 1 <= k <= hosts and not (mine.exists() and mine.read_text().strip() == pid):
            foreign.append(f"{name} (pid {pid})")
    return foreign


def init_pid(k: int) -> int:
    return int((STATE / f"host{k}.pid").read_text().strip())


def on_host(k: int, cmd: str, user: str = "ubuntu") -> str:
    pid = str(init_pid(k))
    as_user = ["sudo", "-u", user, "-H"] if user != "root" else []
    return subprocess.run(
        ["nsenter", "-t", pid, "-m", "-p", "-n", "--", *as_user, "bash", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def wipe(k: int) -> None:
    on_host(k, "pm2 kill >/dev/null 2>&1; rm -rf ~/signalcraft ~/.pm2")
    on_host(
        k,
        "rm -f /etc/nginx/sites-enabled/signalcraft /etc/nginx/sites-available/signalcraft*"
        " /var/lib/signalcraft-deploy/sites/* /var/lib/signalcraft-deploy/parked-default.json; ln"
        " -sfn /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default; nginx -s"
        " reload",
        user="root",
    )


def deploy(repo: AppRepo, n: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    cmd = [
        "fab",
        "-S",
        str(STATE / "ssh_config"),
        "-H",
        ",".join(f"web{k}" for k in range(1, n + 1)),
        "deploy",
        "--known-hosts",
        str(STATE / "known_hosts"),
        "--source-dir",
        str(repo.path),
    ]
    for key, value in SETTINGS.items():
        cmd += ["--set", f"{key}={value}"]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(REPO_ROOT))
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(
            f"deploy to {n} host(s) failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        )
    return seconds, done


def code_change(repo: AppRepo, counter: list[int]) -> None:
    counter[0] += 1
    text = repo.read("app.py")
    marker = "# bench.fleet change"
    lines = [line for line in text.splitlines() if not line.startswith(marker)]
    repo.write("app.py", "\n".join(lines) + f"\n{marker} {counter[0]}\n")
    repo.commit(f"change {counter[0]}")


def start_load(n: int, rate: float) -> Load:
    urls = [
        u
        for k in range(1, n + 1)
        for u in (f"http://198.18.{k}.2/api/ai/load", f"http://198.18.{k}.2/")
    ]
    if rate > 0:
        load = Load(urls, threads=4 * n, max_requests=40_000, max_seconds=120, rate=rate * n)
    else:
        load = Load(urls, threads=LOAD_THREADS, max_requests=40_000, max_seconds=120)
    load.start()
    return load


def measure(repo: AppRepo, n: int, counter: list[int], row: dict[str, Any], rate: float) -> None:
    """One code change (under load) and one no-op on web1..webN, added to `row`."""
    code_change(repo, counter)
    load = start_load(n, rate)
    seconds, _ = deploy(repo, n)
    result = load.stop()
    for k in range(1, n + 1):
        row["failed"][k] += sum(
            c.failed for url, c in result.per_url.items() if f"//198.18.{k}.2/" in url
        )
    row["changes"].append(seconds)
    row["noops"].append(deploy(repo, n)[0])


def run_model(
    repo: AppRepo, hosts: int, runs: int, rate: float, counter: list[int]
) -> list[dict[str, Any]]:
    """`runs` rounds of 1..`hosts` hosts in turn; one row per host count, with its medians."""
    rows: list[dict[str, Any]] = [
        {"n": n, "changes": [], "noops": [], "failed": dict.fromkeys(range(1, n + 1), 0)}
        for n in range(1, hosts + 1)
    ]
    for round_no in range(1, runs + 1):
        for row in rows:
            measure(repo, row["n"], counter, row, rate)
        print(
            f"  round {round_no}: "
            + "; ".join(
                f"{r['n']} host(s) {r['changes'][-1]:.2f} s / no-op {r['noops'][-1]:.2f} s"
                for r in rows
            ),
            flush=True,
        )
    for r in rows:
        r["change"], r["noop"] = statistics.median(r["changes"]), statistics.median(r["noops"])
    return rows


def model_name(share: float) -> str:
    return (
        f"each host held to {share:g} CPU (hosts as separate machines)"
        if share > 0
        else "the hosts share this machine's CPUs"
    )


def table(rows: list[dict[str, object]]) -> str:
    one = rows[0]
    out = [
        (
            "| hosts | code change (median) | x one host | no-op (median) | x one host | failed"
            " requests per host |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        # type: ignore[attr-defined]
        failed = ", ".join(f"web{k}: {v}" for k, v in r["failed"].items())
        out.append(
            # type: ignore[operator]
            f"| {r['n']} | {r['change']:.2f} s | {r['change'] / one['change']:.2f} | {r['noop']:.2f} s | "
            f"{r['noop'] / one['noop']:.2f} | {failed} |"
        )  # type: ignore[operator]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="rounds per CPU model: code changes and no-ops per host count",
    )
    parser.add_argument("--hosts", type=int, default=3, help="largest host count (1..N)")
    parser.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help=(
            "requests a second to each deployed host during a code change (0: 2 threads back to"
            " back)"
        ),
    )
    parser.add_argument(
        "--host-cpu",
        default="0.5,0",
        help=(
            "CPU models, a comma-separated list: a share of a CPU for each host, or 0 for shared"
            " CPUs"
        ),
    )
    args = parser.parse_args(argv)
    shares = [float(x) for x in args.host_cpu.split(",") if x.strip()]
    if any(s > 0 for s in shares) and max(shares) * args.hosts > (os.cpu_count() or 1) - 0.4:
        raise SystemExit(
            f"--host-cpu {max(shares):g} for {args.hosts} hosts leaves this machine's"
            f" {os.cpu_count()} CPUs too little for the deploying side; give a smaller share."
        )
    foreign = foreign_hosts(args.hosts)
    if foreign:
        raise SystemExit(
            f"test host(s) {', '.join(foreign)} are up but not tests/host/fleet-up's (.fleet):"
            " another user's hosts, which this benchmark would wipe; refused. Run it when they are"
            " down."
        )
    subprocess.run(
        [str(REPO_ROOT / "tests/host/fleet-up"), str(args.hosts)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    for k in range(1, args.hosts + 1):
        wipe(k)
    counter = [0]
    load = (
        f"{args.rate:g} requests/s to each host"
        if args.rate > 0
        else f"{LOAD_THREADS} threads back to back"
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = AppRepo(Path(tmp) / "app")
        deploy(repo, args.hosts)  # every host gets the app (not measured)
        for share in shares:
            print(f"{model_name(share)}; load {load}:", flush=True)
            with HostCpu({k: init_pid(k) for k in range(1, args.hosts + 1)}, share):
                rows = run_model(repo, args.hosts, args.runs, args.rate, counter)
            print(table(rows) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
