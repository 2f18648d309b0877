"""The estimator registry (pzpipe.algorithms): one module per estimator, no estimator name
in the shared code, and the version guard of the fast paths."""
import ast
import io
import logging
import os
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

from pzpipe import PipelineError, algorithms
from pzpipe.stages import train
from pzpipe.algorithms import _base
from pzpipe.run.config import REPO_ROOT, deep_update, load_config

SRC = REPO_ROOT / "workflow" / "src" / "pzpipe"
NAMES = sorted(algorithms.REGISTRY)
NAME_RE = re.compile(r"(?<![a-z])(" + "|".join(NAMES) + r")(?![a-z])", re.I)


def test_registry_one_module_per_estimator():
    assert NAMES == sorted(["bpz", "fzboost", "knn", "tpz", "dnf", "gpz", "cmnn", "lephare"])
    for name, algo in algorithms.REGISTRY.items():
        mod = __import__(f"pzpipe.algorithms.{name}", fromlist=["ALGORITHM"])
        assert mod.ALGORITHM is algo
        assert set(algo.extra_meta) == set(algo.extras.values()), name
    assert algorithms.default_names() == ("bpz", "fzboost", "knn", "tpz", "dnf", "gpz", "cmnn",
                                          "lephare")
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    from pzpipe.run.config import enabled_algorithms

    assert enabled_algorithms(cfg) == list(algorithms.default_names())


def _code_strings_and_names(path: Path):
    """Identifiers and non-docstring string literals of a Python file (no comments)."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value
        elif isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            yield node.lineno, node.name
        elif isinstance(node, ast.arg):
            yield node.lineno, node.arg
        elif isinstance(node, ast.alias):
            yield node.lineno, node.name


def _smk_code(path: Path):
    """Tokens of a Snakemake file that are code: comments and triple-quoted docstrings out."""
    text = path.read_text()
    text = re.sub(r'"""(.|\n)*?"""', "", text)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.NAME, tokenize.STRING):
            yield tok.start[0], tok.string


def test_no_estimator_name_outside_the_algorithms_package():
    hits = []
    # every module of pzpipe outside pzpipe/algorithms/ (subpackages such as trainset/ too)
    for p in sorted(q for q in SRC.rglob("*.py") if "algorithms" not in q.relative_to(SRC).parts):
        for line, s in _code_strings_and_names(p):
            if NAME_RE.search(s):
                hits.append(f"{p.relative_to(REPO_ROOT)}:{line}: {s[:60]!r}")
    wf = REPO_ROOT / "workflow"
    for p in sorted([*wf.glob("rules/*.smk"), wf / "Snakefile"]):
        for line, s in _smk_code(p):
            if NAME_RE.search(s):
                hits.append(f"{p.relative_to(REPO_ROOT)}:{line}: {s[:60]!r}")
    assert not hits, "estimator names in shared code:\n" + "\n".join(hits)


def test_fast_paths_are_verified_on_the_installed_versions():
    """If this fails, a package moved: rerun the equivalence tests (tests/test_algo_*.py)
    on the new version and add it to the FastPath's ``verified``."""
    for name, algo in algorithms.REGISTRY.items():
        if algo.fast is not None:
            assert algorithms.version_mismatches(algo.fast) == [], name
    assert set(algorithms.guarantees()) == {"bpz", "fzboost", "tpz", "gpz", "cmnn", "dnf", "knn",
                                            "lephare"}


GUARDED = [(name, dist) for name, algo in sorted(algorithms.REGISTRY.items())
           if algo.fast is not None for dist in sorted(algo.fast.verified)]


def _fake_version(monkeypatch, dists, version="999.0"):
    """Pretend the distributions ``dists`` are installed at ``version`` (None: not
    installed), the others at their real versions; the guard's warnings start afresh."""
    monkeypatch.setattr(_base, "_WARNED", set())
    real = _base.installed_version
    monkeypatch.setattr(_base, "installed_version",
                        lambda dist: version if dist in dists else real(dist))


def _imported_roots(mod: str, seen: set) -> set:
    """Top-level names of every module ``mod`` imports (anywhere in its code, functions
    included), following pzpipe.algorithms' own modules."""
    import importlib.util

    if mod in seen:
        return set()
    seen.add(mod)
    roots = set()
    for node in ast.walk(ast.parse(Path(importlib.util.find_spec(mod).origin).read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and mod.startswith("pzpipe.algorithms."):
                names = ([f"pzpipe.algorithms.{node.module}"] if node.module else
                         [f"pzpipe.algorithms.{a.name}" for a in node.names])
            elif node.level == 0:
                names = [node.module]
        for n in names:
            if n.startswith("pzpipe.algorithms.") and importlib.util.find_spec(n) is not None:
                roots |= _imported_roots(n, seen)
            elif not n.startswith("pzpipe"):
                roots.add(n.split(".")[0])
    return roots


def test_fast_paths_that_compile_guard_numba_and_llvmlite():
    """A fast path whose code imports numba or llvmlite (its estimator module, the module
    of its ``ref`` and the pzpipe.algorithms modules they import) compiles with them: both
    are in its ``verified`` versions, so another numba or llvmlite turns it off."""
    compiled = set()
    for mod in algorithms._MODULES:             # the built-in estimators' modules
        name, algo = mod.ALGORITHM.name, mod.ALGORITHM
        if algo.fast is None:
            continue
        roots = _imported_roots(mod.__name__, set())
        roots |= _imported_roots(algo.fast.ref.split(":")[0], set())
        if roots & {"numba", "llvmlite"}:
            compiled.add(name)
            missing = {"numba", "llvmlite"} - set(algo.fast.verified)
            assert not missing, f"{name}: fast path compiles with numba but does not guard {missing}"
    # the scan sees what it should (bpz_fast calls llvmlite directly; cmnn imports numba
    # inside a function)
    assert {"bpz", "cmnn", "dnf", "fzboost", "knn"} <= compiled, compiled
    assert not compiled & {"tpz", "gpz"}, compiled


@pytest.mark.parametrize("name,dist", GUARDED, ids=[f"{n}-{d}" for n, d in GUARDED])
def test_version_guard_falls_back_with_one_warning_line(name, dist, monkeypatch, caplog):
    """Another version of any one guarded package turns the fast path off, with one
    warning line naming the package."""
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    algo = algorithms.get(name)
    assert algorithms.fast_path_for(algo, cfg) is algo.fast      # the real versions: on
    _fake_version(monkeypatch, {dist})
    with caplog.at_level(logging.WARNING, logger="pzpipe.algorithms"):
        assert algorithms.fast_path_for(algo, cfg) is None
        assert algorithms.fast_path_for(algo, cfg) is None       # once per process
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"{name}: fast path off, running RAIL's own {algo.estimator}")
    assert f"{dist} 999.0 (verified: " in lines[0]


@pytest.mark.parametrize("name", sorted(n for n, a in algorithms.REGISTRY.items() if a.fast))
def test_version_guard_a_missing_package_turns_the_fast_path_off(name, monkeypatch, caplog):
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    algo = algorithms.get(name)
    dist = sorted(algo.fast.verified)[0]
    _fake_version(monkeypatch, {dist}, version=None)
    with caplog.at_level(logging.WARNING, logger="pzpipe.algorithms"):
        assert algorithms.fast_path_for(algo, cfg) is None
    assert [f"{dist} not installed (verified: " in r.getMessage() for r in caplog.records] == [True]


@pytest.fixture(scope="module")
def cmnn_model(tmp_path_factory):
    from pzpipe.stages.samples import read_sample

    tmp = tmp_path_factory.mktemp("guard")
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {"training": {"max_rows": 1000}})
    model = str(tmp / "cmnn.pkl")
    train.run("cmnn", cfg, model, str(tmp / "cmnn.json"))
    data = read_sample(cfg, dict(cfg["validation"], max_rows=200))
    data.pop("redshift")
    data.pop("flags")
    return cfg, model, data


@pytest.mark.parametrize("dist", ["pz-rail-cmnn", "numba", "llvmlite"])
def test_version_guard_runner_runs_rail_code(cmnn_model, dist, monkeypatch, caplog):
    """A Runner under another version of a guarded package (RAIL's, numba, llvmlite) uses
    RAIL's own class, and its results are RAIL's."""
    from rail.estimation.algos.cmnn import CMNNEstimator

    cfg, model, data = cmnn_model
    _fake_version(monkeypatch, {dist})
    with caplog.at_level(logging.WARNING, logger="pzpipe.algorithms"):
        r = algorithms.Runner(algorithms.get("cmnn"), model, cfg, name="guard")
    assert r.fast_path is None and type(r.stage) is CMNNEstimator
    msgs = [x.getMessage() for x in caplog.records if "fast path off" in x.getMessage()]
    assert len(msgs) == 1 and f"{dist} 999.0" in msgs[0], msgs
    pdf, extras = r.estimate(data, chunk_index=0)
    ok = algorithms.Runner(algorithms.get("cmnn"), model,
                           deep_update(cfg, {"algorithms": {"cmnn": {"fast": False}}}),
                           name="rail").estimate(data, chunk_index=0)
    np.testing.assert_array_equal(pdf, ok[0])


def test_fast_false_is_not_a_warning(caplog):
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    c = deep_update(cfg, {"algorithms": {"tpz": {"fast": False}}})
    with caplog.at_level(logging.WARNING, logger="pzpipe.algorithms"):
        assert algorithms.fast_path_for(algorithms.get("tpz"), c) is None
        assert algorithms.fast_path_for(algorithms.get("tpz"), cfg) is algorithms.get("tpz").fast
    assert not caplog.records


def test_prepare_data_is_declared_by_the_algorithm(tmp_path):
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    assert algorithms.with_data_dir(list(algorithms.REGISTRY)) == ["bpz", "lephare"]
    with pytest.raises(PipelineError, match="declares no data directory"):
        train.prepare_data("knn", cfg, str(tmp_path / "knn_data"))
    assert not (tmp_path / "knn_data").exists()


def test_lephare_without_its_data_is_a_clear_error(monkeypatch, tmp_path):
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    (tmp_path / "vega").mkdir()
    (tmp_path / "vega" / "VegaLCB.sed").write_text("")
    c = deep_update(cfg, {"algorithms": {"lephare": {"lepharedir": str(tmp_path)}}})
    monkeypatch.setenv("LEPHAREDIR", os.environ.get("LEPHAREDIR", ""))
    with pytest.raises(PipelineError, match=r"lepharedir=.*lacks vega/BD\+17o4708.sed.*"
                                            r"downloads nothing"):
        algorithms.stage_params(algorithms.get("lephare"), c, "inform")


def test_lephare_non_detections_become_nan():
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    p = algorithms.common_params(cfg)
    d = {b: np.array([20.0, 99.0], dtype=np.float32) for b in p["bands"]}
    d.update({e: np.array([0.1, 26.5], dtype=np.float32) for e in p["err_bands"]})
    out = algorithms.get("lephare").input_transform(d, p)
    for b, e in zip(p["bands"], p["err_bands"]):
        assert out[b][0] == 20.0 and np.isnan(out[b][1]) and np.isnan(out[e][1])


def test_plan_counts_data_jobs_from_the_registry():
    from pzpipe.planning import plan

    tp = {"algorithms": {n: {"obj_per_s_core": 1000.0, "mem_mb_per_worker": 500}
                         for n in algorithms.REGISTRY},
          "sites": {"apollo": {"core_speed": 1.0}, "sdumont": {"core_speed": 1.0}}}
    p = plan.plan(1_000_000, chunks_per_batch=2, algorithms=["bpz", "knn"], throughput=tp)
    assert p["jobs"]["prepare_data"] == 1
    p = plan.plan(1_000_000, chunks_per_batch=2, algorithms=["gpz", "knn"], throughput=tp)
    assert p["jobs"]["prepare_data"] == 0
    assert plan.extra_bytes("cmnn") == 16 and plan.extra_bytes("knn") == 0
