"""PM2's process list (`pm2 jlist`, or pm2_rpc.js `list`): the one parser, here and on the host.

Standard library only, Python 3.8+, nothing run at import: programs sent to the host get this
file inlined (see `signalcraft_deploy.remote.program`); host/facts.py imports it as it is.

`pm2 jlist` may print non-JSON lines first (daemon start-up notes, "In-memory PM2 is
out-of-date"), some of which begin with "[": the list is the first "[" that decodes to a JSON
array. Environment values are never kept, except for the apps a caller names in `env_for`
(takeover_record.py, which must be able to start the app again as it was).
"""

import json

# Annotations without `typing` (its import is 5 ms of every program run on the host): builtin
# types, or text where Python 3.8 would evaluate them.


def pm2_json_list(text: str) -> "list | None":
    """The first JSON array in `text`, or None when there is none (PM2 could not be asked)."""
    decoder = json.JSONDecoder()
    start = text.find("[")
    while start != -1:
        try:
            data = decoder.raw_decode(text[start:])[0]
        except ValueError:
            data = None
        if isinstance(data, list):
            return data
        start = text.find("[", start + 1)
    return None


def pm2_process(item: dict, keep_env: bool = False) -> dict:
    """One process's plain facts (no env values unless `keep_env`: then only str/number ones, as
    text)."""
    env = item.get("pm2_env") or {}
    monit = item.get("monit") or {}
    args = env.get("args") or []
    proc = {
        "name": str(item.get("name", "")),
        "pm_id": int(item.get("pm_id", -1)),
        "pid": int(item.get("pid") or 0),
        "status": str(env.get("status", "unknown")),
        "restarts": int(env.get("restart_time", 0) or 0),
        "started_ms": int(env.get("pm_uptime", 0) or 0),
        "exec_mode": str(env.get("exec_mode", "")).replace("_mode", ""),
        "exec_path": str(env.get("pm_exec_path", "")),
        "cwd": str(env.get("pm_cwd", "")),
        "interpreter": str(env.get("exec_interpreter", "")),
        "args": [str(a) for a in (args if isinstance(args, list) else [args])],
        "memory": int(monit.get("memory", 0) or 0),
        "pid_path": str(env.get("pm_pid_path", "")),
    }
    if keep_env:
        values = env.get("env") or {}
        proc["env"] = {k: str(v) for k, v in values.items() if isinstance(v, (str, int, float))}
    return proc


def pm2_processes(text: str, env_for: "tuple | list" = ()) -> "list[dict] | None":
    """Every process in PM2's list (None if `text` holds no list); env values only for the apps in
    `env_for`."""
    data = pm2_json_list(text)
    if data is None:
        return None
    keep = set(env_for)
    return [pm2_process(item, item.get("name") in keep) for item in data if isinstance(item, dict)]
