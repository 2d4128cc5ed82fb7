"""Runs ON THE HOST inside Gunicorn: appended to every rendered gunicorn.conf.py, after the
template's own text (a TEMPLATES_DIR override included), so that it is always there.

Each worker's WSGI app is wrapped to add `X-Signalcraft-Release`: the release the app's code was
imported from, which is what answers, whatever the worker's working directory. A worker that
imports the app itself names the release its WSGI module's file is in, read as it imports (the
file's path goes through `current`, so it is resolved at once). A worker forked from a master that
preloaded the app (preload_app) inherits the master's modules: it names the release the master
recorded when it first saw them, so the workers of a preloaded master keep naming its old release
after a HUP (the reason such a master needs a new master, never a HUP). A hook the template defines
itself (post_fork, post_worker_init, when_ready, on_reload, child_exit) still runs, before ours.

After a HUP, Gunicorn's master does not replace a new worker that exits while old workers still
finish their requests (recycled after max_requests, or killed at its timeout): Gunicorn 27 waits
for the old ones inside its reload, managing no worker until they are gone (graceful_timeout at
most), and older versions count them among the workers it should have. Under load all the new
workers can recycle at once, leaving none to take requests (measured: 5 new workers all recycled
8 s after the HUP, none came back for 9 s, and 4 requests waited past their client's 5 s). So while
old workers drain, each new worker that exits is replaced at once, by the master, as Gunicorn
itself starts a worker.

Standard library only; no name here may clash with a template's (all start with `_signalcraft`).
"""

import os
import sys

_SIGNALCRAFT_HEADER = "X-Signalcraft-Release"
# The worker classes whose `wsgi` is a WSGI app (sync, gthread, gevent's, eventlet's).
_SIGNALCRAFT_WSGI_WORKERS = (
    "gunicorn.workers.sync",
    "gunicorn.workers.gthread",
    "gunicorn.workers.ggevent",
    "gunicorn.workers.geventlet",
)


def _signalcraft_release_of(path, releases_dir):
    """The release folder `path` lies in (resolved now), or "" outside DEPLOY_ROOT's releases."""
    try:
        found = os.path.relpath(os.path.realpath(path), os.path.realpath(releases_dir))
    except ValueError:
        return ""
    first = found.split(os.sep, 1)[0]
    return "" if first in ("", ".", "..") else first


def _signalcraft_imported_from(module, releases_dir):
    """The release `module` (a name in sys.modules) was loaded from, resolved now: its file's, or
    for a module from elsewhere (an installed package) the working directory's; "" if neither is in
    a release (no header then)."""
    path = getattr(sys.modules.get(module), "__file__", None)
    found = _signalcraft_release_of(path, releases_dir) if path else ""
    return found or _signalcraft_release_of(os.getcwd(), releases_dir)


def _signalcraft_seen():
    """module name -> release, kept in the process across the re-reads of this file (a HUP)."""
    holder = sys.modules.setdefault("_signalcraft_seen", type(sys)("_signalcraft_seen"))
    releases = getattr(holder, "releases", None)
    if releases is None:
        releases = {}
        vars(holder)["releases"] = releases
    return releases


def _signalcraft_mark(app, release):
    def marked(environ, start_response):
        def start(status, headers, exc_info=None):
            headers = [h for h in headers if h[0].lower() != _SIGNALCRAFT_HEADER.lower()]
            headers.append((_SIGNALCRAFT_HEADER, release))
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return marked


def _signalcraft_drain():
    """The master's record of its last HUP: the pids of the workers from before it; kept in the
    process across the re-reads of this file."""
    holder = sys.modules.setdefault("_signalcraft_seen", type(sys)("_signalcraft_seen"))
    old = getattr(holder, "old_workers", None)
    if old is None:
        old = set()
        vars(holder)["old_workers"] = old
    return old


def _signalcraft_reloaded(server):
    """In the master, at a HUP (before its new workers start): every worker it has now is old."""
    old = _signalcraft_drain()
    old.clear()
    old.update(server.WORKERS)


def _signalcraft_exited(server, worker):
    """In the master, when a worker has exited: a new one is replaced at once while old ones still
    drain (never while the master shuts down: it has closed its sockets then)."""
    old = _signalcraft_drain()
    old.discard(worker.pid)
    draining = old & set(server.WORKERS)
    new = [pid for pid in server.WORKERS if pid not in old]
    if draining and server.LISTENERS and len(new) < server.num_workers:
        server.spawn_worker()


def _signalcraft_install(namespace, releases_dir, module):
    """Define the hooks in the configuration's namespace, each calling the template's own first."""
    hooks = ("post_fork", "post_worker_init", "when_ready", "on_reload", "child_exit")
    theirs = {name: namespace.get(name) for name in hooks}

    def note_master(server):
        # In the master: a preloaded app is imported by now; the first release seen is kept.
        if module in sys.modules:
            _signalcraft_seen().setdefault(module, _signalcraft_imported_from(module, releases_dir))

    def when_ready(server):
        if theirs["when_ready"]:
            theirs["when_ready"](server)
        note_master(server)

    def on_reload(server):
        if theirs["on_reload"]:
            theirs["on_reload"](server)
        note_master(server)
        _signalcraft_reloaded(server)

    def child_exit(server, worker):
        if theirs["child_exit"]:
            theirs["child_exit"](server, worker)
        _signalcraft_exited(server, worker)

    def post_fork(server, worker):
        if theirs["post_fork"]:
            theirs["post_fork"](server, worker)
        # The master's modules, as this worker inherits them: the app is preloaded if it is there
        # (from a master this file never saw import it: "unknown", never the release now current).
        preloaded = module in sys.modules
        worker._signalcraft_inherited = (
            _signalcraft_seen().get(module, "unknown") if preloaded else None
        )

    def post_worker_init(worker):
        if theirs["post_worker_init"]:
            theirs["post_worker_init"](worker)
        inherited = getattr(worker, "_signalcraft_inherited", None)
        release = (
            inherited if inherited is not None else _signalcraft_imported_from(module, releases_dir)
        )
        # Only a WSGI app is wrapped: an ASGI or Tornado worker's app is not one (no header there).
        if release and type(worker).__module__ in _SIGNALCRAFT_WSGI_WORKERS:
            worker.wsgi = _signalcraft_mark(worker.wsgi, release)

    namespace.update(
        when_ready=when_ready,
        on_reload=on_reload,
        child_exit=child_exit,
        post_fork=post_fork,
        post_worker_init=post_worker_init,
    )
