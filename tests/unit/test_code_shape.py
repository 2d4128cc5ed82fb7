"""The package's functions stay short: none has 50 or more code lines.

A function's code lines are the lines of its body after the docstring that are neither blank nor
only a comment, nested functions included in their parent's count (and counted again on their own).
Read with `ast` from the source of every module of the package, remote/ programs included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import signalcraft_deploy

ROOT = Path(signalcraft_deploy.__file__).parent
LIMIT = 50  # code lines a function may not reach


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """The non-blank, non-comment lines of a function's body after its docstring."""
    body = node.body
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    text = lines[body[0].lineno - 1 : node.end_lineno]
    return sum(1 for line in text if line.strip() and not line.strip().startswith("#"))


def function_lengths() -> list[tuple[str, int, str, int]]:
    """(module path under the package, line, name, code lines) of every function of the package."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = path.relative_to(ROOT).as_posix()
                found.append((where, node.lineno, node.name, code_lines(node, lines)))
    return found


def test_code_lines_are_counted_after_the_docstring_without_blanks_or_comments() -> None:
    source = '''def f():
    """Doc.

    More doc."""
    # a comment
    a = 1

    return a  # counted
'''
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.FunctionDef)
    assert code_lines(node, source.splitlines()) == 2


def test_no_function_has_50_or_more_code_lines() -> None:
    too_long = [
        f"signalcraft_deploy/{where}:{line} {name} {count}"
        for where, line, name, count in function_lengths()
        if count >= LIMIT
    ]
    assert not too_long, (
        f"functions of {LIMIT} or more code lines (split each into pieces named for what they"
        " do):\n" + "\n".join(too_long)
    )
