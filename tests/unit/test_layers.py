"""The package's layers hold: every import goes down, never up; no two modules import each other.

remote/ < core/ < host/ < steps/ < tasks/ < the top-level modules (collection.py, cli.py,
executor.py, __main__.py). A module may import its own layer and the ones below it; remote/ (the
programs sent to the host) imports only the standard library and other remote/ modules; a tasks/
module is imported only from the top (each is a leaf the collection joins). Read with `ast` from
the source: imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import signalcraft_deploy

PACKAGE = signalcraft_deploy.__name__
ROOT = Path(signalcraft_deploy.__file__).parent
LAYERS = ("remote", "core", "host", "steps", "tasks", "top")
# Not the standard library, yet run on the host: root's copy of the crossplane parser, which `setup`
# installs beside the helper (host/root.py's LIB) and root_helper.py puts on its own path.
INSTALLED_BESIDE_THE_HELPER = {"crossplane"}
# Run with the app's venv's Python, to read Gunicorn's configuration with Gunicorn's own code.
IN_THE_APPS_VENV = {"gunicorn"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module of this package it loads (a name imported from a module: the module)
    path: Path
    line: int
    at_import_time: bool  # not inside a function: runs when `source` itself is imported

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT.parent)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "top"


def imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute names an import statement loads: for `from X import Y`, X.Y when that is a
    module, else X."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def own_module(name: str) -> str | None:
    """The module of this package that `name` is or lies in (None: not this package's)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES and name.split(".")[0] == PACKAGE else None


def statements(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it runs when the module is imported (not in a
    function, nor under `if TYPE_CHECKING:`, which only a type checker reads)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, not in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner or isinstance(child, ast.Lambda) or type_checking_only(child))

    visit(tree, False)
    return found


def type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def all_imports() -> tuple[list[Import], list[tuple[str, str, Path, int]]]:
    """The imports of this package's modules by one another, and every other import (module,
    name, path, line)."""
    ours, others = [], []
    for module, path in MODULES.items():
        for node, at_import_time in statements(ast.parse(path.read_text(), str(path))):
            for name in dict.fromkeys(imported_names(module, path, node)):
                target = own_module(name)
                if target is None:
                    others.append((module, name, path, node.lineno))
                elif target not in (module, PACKAGE):
                    # The package itself runs before any of its modules: importing it adds nothing.
                    ours.append(Import(module, target, path, node.lineno, at_import_time))
    return ours, others


IMPORTS, OTHER_IMPORTS = all_imports()


def upward(imports: list[Import]) -> list[str]:
    return [
        f"{i.where()}: {i.source} ({layer(i.source)}) imports {i.target} ({layer(i.target)})"
        for i in imports
        if LAYERS.index(layer(i.target)) > LAYERS.index(layer(i.source))
    ]


def cycles(imports: list[Import]) -> list[list[str]]:
    """The groups of modules that import one another at import time (strongly connected, Tarjan)."""
    graph: dict[str, list[str]] = {m: [] for m in MODULES}
    for i in imports:
        if i.at_import_time:
            graph[i.source].append(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            connect(v)
    return groups


def test_the_layers_are_read_from_every_module() -> None:
    assert {layer(m) for m in MODULES} == set(LAYERS)
    assert {"signalcraft_deploy.core.plan", "signalcraft_deploy.collection"} <= set(MODULES)
    assert any(not i.at_import_time for i in IMPORTS)  # imports inside functions are read too


def test_no_module_imports_from_a_higher_layer() -> None:
    found = upward(IMPORTS)
    assert not found, "\n".join(found)


def test_no_import_cycle_between_modules() -> None:
    found = cycles(IMPORTS)
    lines = [
        f"{i.where()}: {i.source} imports {i.target}"
        for group in found
        for i in IMPORTS
        if i.at_import_time and i.source in group and i.target in group
    ]
    assert not found, "\n".join(lines)


def test_task_modules_are_imported_only_from_the_top() -> None:
    found = [
        f"{i.where()}: {i.source} imports the task module {i.target}"
        for i in IMPORTS
        if layer(i.target) == "tasks" and layer(i.source) != "top"
    ]
    assert not found, "\n".join(found)


def test_remote_programs_import_only_the_standard_library_and_each_other() -> None:
    """They run on the host with its python3 alone (inlined, sent as text)."""
    found = [
        f"{path.relative_to(ROOT.parent)}:{line}: {module} imports {name}"
        for module, name, path, line in OTHER_IMPORTS
        if layer(module) == "remote"
        and name.split(".")[0]
        not in sys.stdlib_module_names | INSTALLED_BESIDE_THE_HELPER | IN_THE_APPS_VENV
    ]
    assert not found, "\n".join(found)


def test_the_package_itself_loads_only_the_standard_library_when_imported() -> None:
    """Every module imports the package first: at import time it loads nothing of its own."""
    tree = ast.parse(MODULES[PACKAGE].read_text())
    loaded = [
        name
        for node, at_import_time in statements(tree)
        if at_import_time
        for name in imported_names(PACKAGE, MODULES[PACKAGE], node)
    ]
    assert [n for n in loaded if n.split(".")[0] not in sys.stdlib_module_names] == []


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    """The checks themselves fail on what they look for (so that passing means something)."""
    path = MODULES["signalcraft_deploy.core.plan"]
    up = Import("signalcraft_deploy.core.plan", "signalcraft_deploy.host.facts", path, 33, True)
    back = Import("signalcraft_deploy.host.facts", "signalcraft_deploy.core.plan", path, 1, True)
    assert upward([up]) == [
        "signalcraft_deploy/core/plan.py:33: signalcraft_deploy.core.plan (core) imports"
        " signalcraft_deploy.host.facts (host)"
    ]
    assert cycles([up, back]) == [["signalcraft_deploy.core.plan", "signalcraft_deploy.host.facts"]]
    assert cycles([up, Import(back.source, back.target, path, 1, False)]) == []
    # An import only a type checker reads is no cycle; one that runs is.
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nimport b\n"
    )
    assert [(alias.name, runs) for node, runs in statements(tree) for alias in node.names] == [
        ("TYPE_CHECKING", True),
        ("a", False),
        ("b", True),
    ]
