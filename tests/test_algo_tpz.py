"""pzpipe's TPZfastEstimator (trees applied per chunk) equals RAIL's TPZliteEstimator
bit for bit, with the same seeding, and the fast path does the work: every object goes
through the per-tree whole-chunk prediction (``tree_histograms``) and ``smoothed_pdf``
and none through RAIL's per-object ``get_hist`` / ``get_pdf`` (counted, ``helpers.counting``);
with ``fast: false`` the reverse."""
import numpy as np
import pytest
from helpers.counting import Through, one, rows_of

from pzpipe import algorithms
from pzpipe.algorithms import tpz_fast
from pzpipe.run.config import REPO_ROOT, deep_update, load_config
from pzpipe.stages import train
from pzpipe.stages.samples import read_sample


@pytest.fixture(scope="module")
def tpz(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpz")
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {"training": {"max_rows": 1500},
                            "algorithms": {"tpz": {"inform": {"n_random": 2, "n_trees": 3}}}})
    model = str(d / "tpz.pkl")
    train.run("tpz", cfg, model, str(d / "tpz.json"))
    data = read_sample(cfg, dict(cfg["validation"], max_rows=700))
    data.pop("redshift")
    data.pop("flags")
    return cfg, model, data


@pytest.fixture
def through(monkeypatch):
    from rail.estimation.algos.mlz_utils import analysis

    t = Through(monkeypatch)
    t.wrap(tpz_fast, "tree_histograms", "fast_trees", rows_of(1))     # rows: X, all trees
    t.wrap(tpz_fast, "smoothed_pdf", "fast_pdf", one)
    t.wrap(analysis.GetPz_short, "get_hist", "rail_hist", one)        # per object and tree
    t.wrap(analysis.GetPz_short, "get_pdf", "rail_pdf", one)          # per object
    return t


def assert_did_the_work(through, n, fast):
    """All ``n`` objects through the fast code (fast) or RAIL's per-object loop (not)."""
    if fast:
        assert through["fast_trees"] == n and through["fast_pdf"] == n, through
        assert through["rail_hist"] == 0 and through["rail_pdf"] == 0, through
    else:
        assert through["fast_trees"] == 0 and through["fast_pdf"] == 0, through
        assert through["rail_pdf"] == n and through["rail_hist"] >= n, through


def _run(cfg, model, data, fast, chunk=7):
    c = deep_update(cfg, {"algorithms": {"tpz": {"fast": fast}}})
    r = algorithms.Runner(algorithms.get("tpz"), model, c, name=f"tpz{fast}")
    assert (type(r.stage).__name__ == "TPZfastEstimator") == fast
    ens_pdf, extras = r.estimate(data, chunk_index=chunk)
    return ens_pdf, r


def test_fast_tpz_equals_rail(tpz, through):
    cfg, model, data = tpz
    n = len(data["object_id"])
    slow, _ = _run(cfg, model, data, False)
    assert_did_the_work(through, n, False)
    through.reset()
    fast, _ = _run(cfg, model, data, True)
    assert_did_the_work(through, n, True)
    assert np.isfinite(fast).all()
    np.testing.assert_array_equal(fast, slow)


def test_fast_tpz_ancil_zmode_equals_rail(tpz, through):
    cfg, model, data = tpz
    out = {}
    for fast in (False, True):
        through.reset()
        c = deep_update(cfg, {"algorithms": {"tpz": {"fast": fast}}})
        r = algorithms.Runner(algorithms.get("tpz"), model, c, name=f"tpzz{fast}")
        r.begin_chunk(3)
        import joblib

        with joblib.parallel_config(backend="sequential"), algorithms.seeded_default_rng(5):
            ens = r.stage.estimate({k: v.copy() for k, v in data.items()}).data
        out[fast] = np.asarray(ens.ancil["zmode"]).ravel()
        assert_did_the_work(through, len(data["object_id"]), fast)
    np.testing.assert_array_equal(out[True], out[False])


def test_tree_histograms_binning_matches_get_hist():
    """Edge cases of RAIL's get_hist: -1 (no prediction) skipped, bins above the grid
    skipped, exact bin edges floored."""
    from types import SimpleNamespace

    from rail.estimation.algos.mlz_utils import analysis

    from pzpipe.algorithms.tpz_fast import tree_histograms

    pars = SimpleNamespace(zmin=0.0, zmax=3.0, nzbins=301, sigmafactor=3.0)
    S = analysis.GetPz_short(pars)
    vals = np.array([-1.0, 0.0, 0.01, 0.015, 2.99, 3.0, 3.5, 1.2345])

    class Tree:
        def predict(self, X):
            return vals[X[:, 0].astype(int)]

    X = np.arange(len(vals), dtype=float).reshape(-1, 1)
    fast = np.zeros((len(vals), len(S.zbins)))
    tree_histograms([Tree(), Tree()], X, S, fast)
    ref = np.zeros_like(fast)
    for _ in range(2):
        for i in range(len(vals)):
            temp = np.array([vals[i]])
            if temp[0] != -1.0:
                ref[i, :] += S.get_hist(temp)
    np.testing.assert_array_equal(fast, ref)


def test_smoothed_pdf_equals_get_pdf():
    from types import SimpleNamespace

    from rail.estimation.algos.mlz_utils import analysis

    from pzpipe.algorithms.tpz_fast import smoothed_pdf

    pars = SimpleNamespace(zmin=0.0, zmax=3.0, nzbins=301, sigmafactor=3.0, rmsfactor=0.02)
    S = analysis.GetPz_short(pars)
    rng = np.random.default_rng(0)
    raws = [np.zeros(len(S.zbins)), rng.integers(0, 5, len(S.zbins)).astype(float)]
    for _ in range(50):
        r = np.zeros(len(S.zbins))
        np.add.at(r, rng.integers(0, len(S.zbins), rng.integers(1, 40)), 1.0)
        raws.append(r)
    for r in raws:
        np.testing.assert_array_equal(smoothed_pdf(S, r.copy()), S.get_pdf(r.copy(), 0.0)[1])
