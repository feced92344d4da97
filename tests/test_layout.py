"""Units a reader can hold: no module of the package over 500 lines, no function over 60 lines of
code (its body's lines less blank lines, comments and the docstring)."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "disco"
MAX_MODULE_LINES = 500
MAX_FUNCTION_CODE_LINES = 60


def code_lines(source: str) -> set[int]:
    """The lines of ``source`` that hold a token of code (not only a comment or whitespace)."""
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENCODING,
        tokenize.ENDMARKER,
    }
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def _docstring_lines(node: ast.AST) -> set[int]:
    body = getattr(node, "body", [])
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return set(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return set()


def function_sizes(source: str) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, lines of code)`` of every function in ``source``.

    A function's lines of code are those of its body (the signature and decorators excluded)
    that hold code, less its docstring; a nested function's lines count in the function
    holding it too, as a reader must hold them there.
    """
    code = code_lines(source)
    sizes: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                first, last = child.body[0].lineno, child.end_lineno or child.lineno
                body = set(range(first, last + 1)) - _docstring_lines(child)
                sizes.append((name, child.lineno, len(body & code)))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return sizes


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent.parent))


def test_no_module_is_over_the_limit() -> None:
    offenders = []
    for path in _modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{_relative(path)}: {lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_is_over_the_limit() -> None:
    offenders = []
    for path in _modules():
        for name, line, size in function_sizes(path.read_text()):
            if size > MAX_FUNCTION_CODE_LINES:
                offenders.append(f"{_relative(path)}:{line}: {name}, {size} lines of code")
    assert not offenders, f"functions over {MAX_FUNCTION_CODE_LINES} lines of code:\n" + "\n".join(
        offenders
    )


SAMPLE = '''
def short(x):
    """One line.

    And more docstring, which does not count.
    """
    # a comment does not count

    y = (x +
         1)
    return y


class Holder:
    @staticmethod
    def method(a,
               b):
        def inner():
            return a
        return inner() + b
'''


def test_the_counts_leave_out_docstrings_comments_blank_lines_and_signatures() -> None:
    sizes = {name: (line, size) for name, line, size in function_sizes(SAMPLE)}
    # ``y = (x +`` and its continuation are two lines of code, ``return y`` a third.
    assert sizes["short"] == (2, 3)
    # The decorator and the two-line signature are not counted; the nested function counts in
    # both. A function's line is that of its ``def``.
    assert sizes["Holder.method"] == (16, 3)
    assert sizes["Holder.method.inner"] == (18, 1)


@pytest.mark.parametrize("extra", [0, 1])
def test_a_function_one_line_over_the_limit_is_found(extra: int) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_CODE_LINES + extra))
    ((_, _, size),) = function_sizes(f'def f():\n    """Doc."""\n{body}')
    assert size == MAX_FUNCTION_CODE_LINES + extra
