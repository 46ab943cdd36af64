"""The shape of the source tree, as docs/architecture.md describes it: one owner per concern,
no import cycles (Python or C), no module reaching into another's private names, one module
alone importing the compiled extensions, and modules short enough to read."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "shmpubsub"
CSRC = ROOT / "csrc"
MAX_LINES = 800


def _modules() -> dict[str, Path]:
    """Dotted name (relative to the package) of every Python module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()
#: The compiled extensions (built from csrc/ by cffi, and from _fastpath.c).
EXTENSIONS = {"_ffi", "_fastpath"}
KNOWN = set(MODULES) | EXTENSIONS


def _resolve(module: str, path: Path, level: int, name: str | None) -> str:
    """The package-relative name a relative import in *module* refers to."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "":
        package = []
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, *(name.split(".") if name else [])])


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every relative import in *module*, wherever it
    is (top level, functions, TYPE_CHECKING blocks: a cycle hidden in any of them is one)."""
    path = MODULES[module]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            target = _resolve(module, path, node.level, node.module)
            names = [alias.name for alias in node.names]
            if target in KNOWN or target == "":
                found.append((target, names))
            # `from . import x` imports the submodule x
            for name in names:
                sub = f"{target}.{name}" if target else name
                if sub in KNOWN:
                    found.append((sub, []))
    return found


def _graph() -> dict[str, set[str]]:
    return {
        module: {target for target, _ in _imports(module) if target != module and target != ""}
        for module in MODULES
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of *graph* (as a path that starts and ends at the same node), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_python_import_cycle() -> None:
    graph = _graph()
    assert "publisher" in graph["aio"] and "lifecycle" in graph["publisher"]  # the parser sees imports
    assert _cycle(graph) is None


def test_no_module_imports_another_modules_private_names() -> None:
    offences = []
    for module, path in MODULES.items():
        aliases = {}
        for target, names in _imports(module):
            offences += [
                f"{module}: from {target or '.'} import {n}"
                for n in names
                if n.startswith("_") and f"{target}.{n}".strip(".") not in KNOWN
            ]
            for n in names:
                if f"{target}.{n}".strip(".") in KNOWN:
                    aliases[n] = f"{target}.{n}".strip(".")
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                offences.append(f"{module}: {node.value.id}.{node.attr}")
    assert not offences


def test_only_the_binding_layer_imports_the_compiled_extensions() -> None:
    users = {module for module in MODULES for target, _ in _imports(module) if target in EXTENSIONS}
    assert users == {"_core.lib"}


def test_no_module_is_too_long_to_read() -> None:
    lengths = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    long = {module: n for module, n in lengths.items() if n > MAX_LINES}
    assert not long


def _c_units() -> dict[str, tuple[set[str], set[str]]]:
    """For each csrc/*.c: (functions it defines, functions it calls that another unit defines)."""
    units = {}
    for source in sorted(CSRC.glob("*.c")):
        text = re.sub(r"/\*.*?\*/", "", source.read_text(), flags=re.S)
        defined = set(re.findall(r"^[a-z_][\w \*]*?\b(sps_\w+)\s*\([^;{]*\)\s*\{", text, flags=re.M))
        called = set(re.findall(r"\b(sps_\w+)\s*\(", text)) - defined
        units[source.stem] = (defined, called)
    return units


def test_no_c_unit_calls_into_a_unit_that_calls_back() -> None:
    units = _c_units()
    assert "sps_header_read" in units["header"][0] and "sps_header_read" in units["ring"][1]
    owner = {f: unit for unit, (defined, _) in units.items() for f in defined}
    graph = {unit: {owner[f] for f in called if f in owner} - {unit} for unit, (_, called) in units.items()}
    assert _cycle(graph) is None, graph


@pytest.mark.skipif(shutil.which("nm") is None or shutil.which("gcc") is None, reason="needs gcc and nm")
def test_the_c_call_graph_read_from_the_source_matches_the_objects(tmp_path: Path) -> None:
    """The regular expressions above against what the compiler says each object needs."""
    units = _c_units()
    for unit, (defined, called) in units.items():
        obj = tmp_path / f"{unit}.o"
        compile_it = ["gcc", "-std=c11", "-I", str(CSRC), "-c", str(CSRC / f"{unit}.c"), "-o", str(obj)]
        subprocess.run(compile_it, check=True)
        listing = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True)
        symbols = listing.stdout.splitlines()
        text = {line.split()[-1] for line in symbols if " T " in line and "sps_" in line}
        undefined = {line.split()[-1] for line in symbols if " U " in line and "sps_" in line}
        assert text == defined, unit
        assert undefined <= called, unit
