#!/usr/bin/python3 -IS
"""Runs ON THE HOST as an app user, through sudo: installed by `setup` as
/usr/local/sbin/signalcraft-app (root's, 0755), run as `sudo -n -u APP_USER
/usr/local/sbin/signalcraft-app PROGRAM ARGS...`.

The one door from the deploy user to the apps' account, and it only lowers rights: the deploy user
owns the code the apps run, so running a program as the app user gives it nothing it did not have.
The other way there is no door: the app user has no sudo of any kind. What this file adds to sudo is
sameness: every program it starts (PM2's command line, the programs the tool sends on stdin, hooks)
gets the same environment whatever sudo passes on, so the app user's PM2 daemon, started by
whichever call comes first, always has the same one: HOME, USER, LOGNAME and SHELL from the passwd
entry, PM2_HOME=$HOME/.pm2, a fixed PATH of the system's folders, LANG=C.UTF-8; umask 027 (what the
apps write is not world-readable); the working folder $HOME; PM2_HOME 0700, made if missing (PM2
makes its sockets 0775: the folder is what keeps other users out). It refuses to run as root, and a
PROGRAM that is not an absolute path or a name on that PATH. Standard library only; python3 -IS (no
user site, no environment).
"""

import os
import pwd
import sys

# What only a type checker reads is not imported at run time: `typing` is 5-10 ms of CPU of every
# call (hundreds a deploy), this helper's own start ~10 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UMASK = 0o027


def refuse(why: str) -> "NoReturn":
    sys.stderr.write(f"signalcraft-app: refused: {why}\n")
    sys.exit(2)


def environment(user: "pwd.struct_passwd") -> "dict[str, str]":
    return {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": user.pw_shell or "/bin/sh",
        "PM2_HOME": os.path.join(user.pw_dir, ".pm2"),
        "PATH": PATH,
        "LANG": "C.UTF-8",
    }


def main(argv: "list[str]") -> None:
    if os.getuid() == 0 or os.geteuid() == 0:
        refuse("this runs programs as an app user, never as root")
    if not argv:
        refuse("no program given")
    user = pwd.getpwuid(os.getuid())
    env = environment(user)
    found = argv[0] if os.path.isabs(argv[0]) else which(argv[0])
    if not found:
        refuse(f"{argv[0]!r} is neither an absolute path nor a program on {PATH}")
    os.umask(UMASK)
    os.makedirs(env["PM2_HOME"], mode=0o700, exist_ok=True)
    os.chmod(env["PM2_HOME"], 0o700)  # also when a PM2 run some other way (umask 022) made it first
    os.chdir(user.pw_dir)
    os.execve(found, [argv[0], *argv[1:]], env)


def which(name: str) -> "str | None":
    import shutil  # here: the tool's own calls name /bin/sh (shutil is 5 ms of each call)

    return shutil.which(name, path=PATH)


if __name__ == "__main__":
    main(sys.argv[1:])
