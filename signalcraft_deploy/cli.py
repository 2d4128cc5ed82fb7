"""The `signalcraft-deploy` command: `fab` with this library's collection built in.

`signalcraft-deploy -H ubuntu@host deploy` is `fab -H ubuntu@host deploy` without a fabfile.py;
every core flag of `fab` (-H, -i, --list, --help, ...) works the same. `--version` prints this
library's version on its first line, then Fabric's, Paramiko's and Invoke's.
"""

from __future__ import annotations

from fabric import Config
from fabric import __version__ as fabric_version
from fabric.main import Fab
from invoke import __version__ as invoke_version
from paramiko import __version__ as paramiko_version

from signalcraft_deploy import __version__
from signalcraft_deploy.executor import FleetExecutor

NAME = "signalcraft-deploy"


class Program(Fab):
    """Fabric's program, given the collection instead of looking for a fabfile.py."""

    def print_version(self) -> None:
        print(f"{NAME} {__version__}")
        print(f"Fabric {fabric_version}")
        print(f"Paramiko {paramiko_version}")
        print(f"Invoke {invoke_version}")


def make_program() -> Program:
    from signalcraft_deploy.collection import ns

    return Program(
        name=NAME,
        binary=NAME,
        version=__version__,
        namespace=ns,
        executor_class=FleetExecutor,
        config_class=Config,
    )


def main() -> None:
    make_program().run()
