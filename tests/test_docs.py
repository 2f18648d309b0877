"""The documentation names only what exists: every ``pzpipe.<module>`` (or
``pzpipe.<module>.<name>``), every ``tests/...`` file and every estimator with a fast path
(docs/estimators.md's table). Docs that name a moved module, a deleted test or a missing
fast path fail here instead of misleading a reader."""
from __future__ import annotations

import importlib
import re

import pytest

from helpers.runs import REPO

from pzpipe import algorithms

DOCS = sorted([*(REPO / "docs").glob("*.md"), REPO / "README.md", REPO / "config" / "README.md",
               *(REPO / "benchmarks" / "results").glob("*.md")])
SOURCES = sorted([*(REPO / "workflow" / "src" / "pzpipe").rglob("*.py"),
                  *(REPO / "workflow" / "rules").glob("*.smk"), *(REPO / "tests").rglob("*.py"),
                  *(REPO / "benchmarks").glob("*.py")])
# names that look like modules and are not: the job logger, the repository's URL, and
# test_house_plan's made-up graph
NOT_MODULES = {"pzpipe.job", "pzpipe.git", "pzpipe.core.a", "pzpipe.stages.b", "pzpipe.x.y"}
MOD_RE = re.compile(r"\bpzpipe(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
TEST_RE = re.compile(r"\btests/(?:helpers/)?[A-Za-z0-9_]+\.py\b")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("path", DOCS + SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_modules_and_tests_exist(path):
    text = path.read_text()
    bad = sorted({m.rstrip(".") for m in MOD_RE.findall(text)
                  if m.rstrip(".") not in NOT_MODULES and not _resolves(m.rstrip("."))})
    assert bad == [], f"{path.name} names what does not exist: {bad}"
    missing = sorted({t for t in TEST_RE.findall(text) if not (REPO / t).exists()})
    assert missing == [], f"{path.name} names missing test files: {missing}"


def test_estimators_doc_lists_every_fast_path():
    text = (REPO / "docs" / "estimators.md").read_text()
    for name, algo in algorithms.REGISTRY.items():
        row = re.search(rf"^\| `{name}` \|[^\n]*", text, re.M)
        assert row, f"docs/estimators.md has no row for {name}"
        if algo.fast is not None:
            cls = algo.fast.ref.rpartition(":")[2]
            assert cls in text, f"docs/estimators.md does not name {name}'s fast path {cls}"


def test_design_names_every_module():
    text = (REPO / "docs" / "DESIGN.md").read_text()
    pkg = REPO / "workflow" / "src" / "pzpipe"
    mods = [".".join(p.relative_to(pkg.parent).with_suffix("").parts)
            for p in pkg.rglob("*.py") if p.name != "__init__.py"]
    missing = sorted(m for m in mods if f"`{m}`" not in text)
    assert missing == [], f"docs/DESIGN.md's house plan does not name {missing}"
