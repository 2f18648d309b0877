"""FlexZBoost (pzpipe.algorithms.fzboost): the fast path (FlexCode's post-processing
compiled, fzboost_fast) equals flexcode's own functions and RAIL's FlexZBoostEstimator bit
for bit, and the pipeline really uses it."""
import numpy as np
import pytest
from flexcode import post_processing as pp

from pzpipe import algorithms
from pzpipe.stages import train
from pzpipe.algorithms import fzboost_fast as fzbfast
from pzpipe.run.config import REPO_ROOT, deep_update, load_config
from pzpipe.stages.samples import read_sample


def _cases(n=301):
    rng = np.random.default_rng(1)
    rows = [rng.normal(0, 1, n) * 3,                       # bisection needed
            rng.normal(0, 1, n) * 0.1,                     # area < 1: rescale
            -np.abs(rng.normal(0, 1, n)),                  # all negative -> uniform
            np.zeros(n),
            np.r_[np.full(n // 2, 5.0), np.full(n - n // 2, -1.0)],
            np.exp(-0.5 * ((np.linspace(0, 1, n) - 0.3) / 0.02) ** 2) * 40
            + np.exp(-0.5 * ((np.linspace(0, 1, n) - 0.8) / 0.01) ** 2) * 0.5 - 0.05]
    nanrow = rng.normal(0, 1, n) * 3
    nanrow[n // 3] = np.nan
    rows.append(nanrow)
    for _ in range(30):
        rows.append(rng.normal(0, 1, n).cumsum() * rng.uniform(0.05, 2))
    return np.array(rows)


@pytest.mark.parametrize("n", [301, 100, 7, 1000])
def test_normalize_equals_flexcode(n):
    a = _cases(n)
    b = a.copy()
    pp.normalize(a)
    fzbfast.normalize(b)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("delta", [0.0, 0.02, 0.1, 0.5])
def test_remove_bumps_equals_flexcode(delta):
    a = _cases()
    pp.normalize(a)
    b = a.copy()
    pp.remove_bumps(a, delta)
    fzbfast.remove_bumps(b, delta)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("alpha", [1.0, 1.3, 2.7])
def test_sharpen_equals_flexcode(alpha):
    a = np.abs(_cases())
    pp.normalize(a)
    b = a.copy()
    pp.sharpen(a, alpha)
    fzbfast.sharpen(b, alpha)
    np.testing.assert_array_equal(a, b)


def test_patch_is_scoped():
    import flexcode.core as core

    with fzbfast.patched():
        assert core.normalize is fzbfast.normalize
    assert core.normalize is pp.normalize and core.remove_bumps is pp.remove_bumps


def test_fast_fzboost_equals_rail(tmp_path, monkeypatch):
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {"training": {"max_rows": 1200}})
    model = str(tmp_path / "fzb.pkl")
    train.run("fzboost", cfg, model, str(tmp_path / "fzb.json"))
    data = read_sample(cfg, dict(cfg["validation"], max_rows=3000))
    data.pop("redshift")
    data.pop("flags")
    # count the rows that go through the compiled post-processing: FlexCode's own
    # functions must not be called when the fast path is on, ours not when it is off
    calls = {"fast": 0, "flexcode": 0}
    for name in ("normalize", "remove_bumps"):
        ours, theirs = getattr(fzbfast, name), getattr(pp, name)

        def counted(f, key):
            def g(cde, *a, **k):
                calls[key] += len(cde)
                return f(cde, *a, **k)
            return g

        monkeypatch.setattr(fzbfast, name, counted(ours, "fast"))
        monkeypatch.setattr(pp, name, counted(theirs, "flexcode"))
        import flexcode.core as core
        monkeypatch.setattr(core, name, counted(theirs, "flexcode"))
    out = {}
    for fast in (False, True):
        calls.update(fast=0, flexcode=0)
        c = deep_update(cfg, {"algorithms": {"fzboost": {"fast": fast}}})
        r = algorithms.Runner(algorithms.get("fzboost"), model, c, name=f"fzb{fast}")
        assert (r.fast_path is not None) == fast
        out[fast], _ = r.estimate(data)
        if fast:
            assert calls["fast"] >= len(data["object_id"]) and calls["flexcode"] == 0, calls
        else:
            assert calls["fast"] == 0 and calls["flexcode"] >= len(data["object_id"]), calls
    assert np.isfinite(out[True]).all()
    np.testing.assert_array_equal(out[True], out[False])
