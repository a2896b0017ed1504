"""Python 3.9 (3D Slicer 5.8's Python): the `X | Y` unions that vermin does not judge.

The README's test command runs ``vermin --target=3.9-`` over the packages and
modules for syntax and library calls newer than 3.9.  Vermin's own union check
flags every ``X | Y``, also annotations that ``from __future__ import
annotations`` keeps unevaluated, so it is not used; this test finds the unions
that Python 3.9 would evaluate and fail on (``TypeError: unsupported operand
type(s) for |``): type aliases, ``isinstance`` tuples, ``cast`` arguments, and
annotations in a file without the ``__future__`` import.
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
CHECKED = ("mskai", "mskai_slicer", "SpineOVF", "WristQC", "SacroiliitisCT", "CervicalMR")
BUILTIN_TYPES = {"int", "str", "float", "bool", "bytes", "bytearray", "complex", "list", "dict",
                 "tuple", "set", "frozenset", "type", "object"}


def _looks_like_a_type(node: ast.expr) -> bool:
    """None, a builtin type, a CapWords name or attribute (``Path``, ``torch.Tensor``) or a
    subscripted generic: not a bitwise or of arrays, numbers or UPPER_CASE flags."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in BUILTIN_TYPES or (node.id[:1].isupper() and not node.id.isupper())
    if isinstance(node, ast.Attribute):
        return node.attr[:1].isupper() and not node.attr.isupper()
    if isinstance(node, ast.Subscript):
        return _looks_like_a_type(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _looks_like_a_type(node.left) or _looks_like_a_type(node.right)
    return False


def _annotation_node_ids(tree: ast.AST) -> set[int]:
    annotations: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
                if arg is not None and arg.annotation is not None:
                    annotations.append(arg.annotation)
            if node.returns is not None:
                annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    return {id(sub) for annotation in annotations for sub in ast.walk(annotation)}


def unions_evaluated_at_runtime(source: str, name: str = "<source>") -> list[str]:
    """``name:line: union`` for every ``X | Y`` of types that Python 3.9 would evaluate."""
    tree = ast.parse(source, name)
    postponed = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
                    and any(alias.name == "annotations" for alias in node.names) for node in tree.body)
    in_annotation = _annotation_node_ids(tree)
    found, inner = [], set()
    for node in ast.walk(tree):  # breadth first: a whole union before its parts
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in inner
                and _looks_like_a_type(node) and not (postponed and id(node) in in_annotation)):
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            inner.update(id(sub) for sub in ast.walk(node))
    return sorted(found)


def test_the_check_finds_what_python_3_9_evaluates():
    source = ("from __future__ import annotations\n"
              "Alias = dict[str, tuple[float, float] | None]\n"
              "def f(x: int | None, flags: int = READ | WRITE) -> Path | str:\n"
              "    mask = values | other\n"
              "    return isinstance(x, int | str)\n")
    assert unions_evaluated_at_runtime(source) == ["<source>:2: tuple[float, float] | None",
                                                   "<source>:5: int | str"]
    without_future = "def f(x: int | None) -> None:\n    pass\n"
    assert unions_evaluated_at_runtime(without_future) == ["<source>:1: int | None"]


@pytest.mark.parametrize("folder", CHECKED)
def test_no_union_is_evaluated_on_python_3_9(folder):
    found = [line for path in sorted((REPOSITORY / folder).rglob("*.py"))
             for line in unions_evaluated_at_runtime(path.read_text(encoding="utf-8"),
                                                     str(path.relative_to(REPOSITORY)))]
    assert found == [], "unions that Python 3.9 evaluates (use typing.Union/Optional there):\n" + "\n".join(found)


def _python39() -> str | None:
    """A Python 3.9 interpreter on this machine (pyenv's or on PATH), or None."""
    import shutil

    candidates = sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))
    found = shutil.which("python3.9")
    if found:
        candidates.insert(0, Path(found))
    for candidate in candidates:
        try:
            out = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return str(candidate)
    return None


def test_every_file_compiles_with_python_3_9():
    """Byte-compiles every file with a real Python 3.9 when one is installed (vermin's
    check stands alone otherwise): catches syntax that only a 3.9 parser refuses."""
    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine (vermin's check still ran)")
    files = [str(path) for folder in CHECKED for path in sorted((REPOSITORY / folder).rglob("*.py"))]
    script = ("import sys\nbad = []\nfor name in sys.argv[1:]:\n"
              "    try:\n        compile(open(name, encoding='utf-8').read(), name, 'exec')\n"
              "    except SyntaxError as exc:\n        bad.append(f'{name}:{exc.lineno}: {exc.msg}')\n"
              "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n")
    out = subprocess.run([python39, "-c", script, *files], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, "Python 3.9 cannot compile:\n" + out.stdout + out.stderr
    assert len(files) > 50
