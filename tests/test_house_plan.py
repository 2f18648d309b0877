"""The package's house plan: subpackages by concern, no import circle, no import from a
lower layer to a higher one, no module used only by the tests.

The graph is read from the source with ``ast`` (every ``import``/``from`` statement,
including the ones inside functions, since a lazy import still ties two modules).
Layers, lowest first (DESIGN.md, "House plan"):

    core  <  algorithms  <  run  <  release  <  stages, trainset  <  planning  <  cli
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from helpers.runs import REPO

PKG = REPO / "workflow" / "src" / "pzpipe"
LAYER = {"core": 0, "algorithms": 1, "run": 2, "release": 3, "stages": 4, "trainset": 4,
         "planning": 5, "cli": 6}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """pzpipe modules imported by the module ``name`` (file ``path``)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import mod" depends on the module pkg.mod when it is one, and on
            # pkg itself only for names that are not modules
            subs = [f"{mod}.{a.name}" for a in node.names]
            targets = [s for s in subs if s in known]
            if len(targets) < len(subs):
                targets.append(mod)
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t.startswith("pzpipe") and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # importing pzpipe.x.y runs pzpipe/__init__ and pzpipe/x/__init__: an edge to a
    # package's __init__ is not a dependency on its modules, so keep edges as read
    return {m: imports_of(p, m, known) - {"pzpipe"} for m, p in mods.items()}


def layer_of(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in g}
    stack: list[str] = []

    def visit(m):
        color[m] = GREY
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if color.get(n) == GREY:
                return stack[stack.index(n):] + [n]
            if color.get(n) == WHITE:
                c = visit(n)
                if c:
                    return c
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(g):
        if color[m] == WHITE:
            c = visit(m)
            if c:
                return c
    return None


def test_every_module_lives_in_a_subpackage_of_known_layer():
    top = sorted(m for m in modules() if m.count(".") == 1 and m.split(".")[1] not in LAYER)
    assert top == [], f"modules at the top of pzpipe outside the house plan: {top}"
    assert {m.split(".")[1] for m in modules() if m.count(".") >= 1} <= set(LAYER)


def test_no_import_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = []
    for m, deps in graph().items():
        lm = layer_of(m)
        for d in deps:
            ld = layer_of(d)
            if lm is not None and ld is not None and ld > lm:
                bad.append(f"{m} (layer {lm}) imports {d} (layer {ld})")
    assert bad == [], "\n".join(sorted(bad))


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The two checks above can fail: a made-up graph with a circle and an upward edge."""
    g = {"pzpipe.core.a": {"pzpipe.stages.b"}, "pzpipe.stages.b": {"pzpipe.core.a"}}
    assert find_cycle(g) == ["pzpipe.core.a", "pzpipe.stages.b", "pzpipe.core.a"]
    assert layer_of("pzpipe.core.a") < layer_of("pzpipe.stages.b")


def test_read_stays_light():
    """``pzpipe.release.read`` (the [read] install) imports only core modules besides
    the lazily imported numba decoder."""
    g = graph()
    deps = g["pzpipe.release.read"] - {"pzpipe.release.pdfstore"}
    assert all(d.startswith("pzpipe.core.") for d in deps), deps


def _referenced_outside_tests(mod: str, path: Path) -> bool:
    """Is ``mod`` named by the package, the rules, the benchmarks, the Makefile or a
    profile (anything that ships or runs besides the tests)?"""
    short = mod.split(".")[-1]
    pat = re.compile(rf"\b{re.escape(mod)}\b|from {re.escape(mod.rpartition('.')[0])} import "
                     rf"[^\n]*\b{re.escape(short)}\b|from \. import [^\n]*\b{re.escape(short)}\b"
                     rf"|from \.{re.escape(short)} import")
    where = [*PKG.rglob("*.py"), *(REPO / "workflow").rglob("*.smk"), REPO / "workflow" / "Snakefile",
             *(REPO / "benchmarks").glob("*.py"), REPO / "Makefile", REPO / "pyproject.toml"]
    return any(pat.search(p.read_text()) for p in where if p != path and p.is_file())


def test_no_module_used_only_by_tests():
    unused = [m for m, p in modules().items()
              if p.name != "__init__.py" and m != "pzpipe.cli"
              and not _referenced_outside_tests(m, p)]
    assert unused == [], f"modules nothing but the tests uses (move them to tests/helpers): {unused}"
