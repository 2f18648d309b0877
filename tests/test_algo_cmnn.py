"""CMNN (pzpipe.algorithms.cmnn) against RAIL's own CMNNEstimator on the same model.

RAIL runs for real (pz-rail-cmnn). The fast estimator must give exactly RAIL's Gaussian
(loc, scale) and ancillaries in all three selection modes, with non-detections replaced
or ignored; the pipeline's runner, cutting a chunk into sub-chunks, must give exactly
RAIL's result on the whole chunk with the per-chunk seed (docs/estimators.md).
"""
import numpy as np
import pytest

from pzpipe import algorithms
from pzpipe.stages import train
from pzpipe.algorithms import cmnn
from pzpipe.run.config import REPO_ROOT, deep_update, load_config
from pzpipe.stages.estimate import estimate_table
from pzpipe.stages.samples import read_sample
from pzpipe.release.pointest import FLAG_PDF_BAD


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmnn")
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {"training": {"max_rows": 4000}})
    models = {}
    for replace in (False, True):
        c = deep_update(cfg, {"algorithms": {"cmnn": {"inform": {"nondetect_replace": replace}}}})
        models[replace] = str(d / f"cmnn{replace}.pkl")
        train.run("cmnn", c, models[replace], str(d / f"cmnn{replace}.json"))
    data = read_sample(cfg, dict(cfg["validation"], max_rows=900, seed=7))
    data.pop("redshift")
    flags = data.pop("flags")
    # objects detected in one band only (no colour: RAIL's bad_redshift_val) and with
    # missing bands (fewer colours, RAIL's wider search)
    for b in "ugriz":
        data[f"mag_{b}_lsst"][:3] = 99.0
    for b in "ugr":
        data[f"mag_{b}_lsst"][3:60] = 99.0
    return cfg, models, data, flags


_n = [0]


def _stage(cls, model, cfg, **over):
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    _n[0] += 1
    algo = algorithms.get("cmnn")
    params = {**algorithms.stage_params(algo, cfg, "estimate"), "calculated_point_estimates": [],
              **over}
    return cls.make_stage(name=f"cmnn_t{_n[0]}", model=model, output_mode="return", **params)


def _out(ens):
    return (np.asarray(ens.objdata["loc"]).ravel(), np.asarray(ens.objdata["scale"]).ravel(),
            np.asarray(ens.ancil["Ncm"]).ravel(), np.asarray(ens.ancil["ncolors"]).ravel())


@pytest.fixture
def through(monkeypatch):
    """Objects through the compiled mode-1 kernel and through RAIL's per-object code (the
    fast class's copy of RAIL's loop body, ``_one_object``), counted independently of
    the estimator's own ``path_counts``."""
    from types import SimpleNamespace

    from helpers.counting import Through, one

    t = Through(monkeypatch)
    distances, mode1 = cmnn._kernels()
    holder = SimpleNamespace(mode1=mode1)
    t.wrap(holder, "mode1", "kernel")                     # rows: test colours
    monkeypatch.setattr(cmnn, "_MODE1", (distances, holder.mode1))
    t.wrap(cmnn.CMNNfastEstimator, "_one_object", "rail_object", one)
    return t


@pytest.mark.parametrize("mode,replace", [(1, False), (1, True), (0, False), (2, False)])
def test_fast_estimator_equals_rail(env, mode, replace, through):
    from rail.estimation.algos.cmnn import CMNNEstimator

    cfg, models, data, _ = env
    res = {}
    for cls in (CMNNEstimator, cmnn.CMNNfastEstimator):
        st = _stage(cls, models[replace], cfg, selection_mode=mode, chunk_size=400, seed=11)
        through.reset()
        res[cls.__name__] = _out(st.estimate({k: v.copy() for k, v in data.items()}).data)
        if cls is not CMNNEstimator:
            counts = st.path_counts
            n = len(data["object_id"])
            # independent of path_counts: objects into the kernel, objects through RAIL's code
            assert through["kernel"] == (n if mode == 1 else 0), through
            assert through["rail_object"] == counts[1] and counts.sum() == n, (through, counts)
    for a, b in zip(res["CMNNEstimator"], res["CMNNfastEstimator"]):
        np.testing.assert_array_equal(a, b)
    loc = res["CMNNEstimator"][0]
    # no colour left: RAIL's bad_redshift_val (with non-detections replaced by the
    # limits every object has all colours)
    assert (loc[:3] == 99.0).all() != replace
    if mode == 1:
        # the compiled paths did the work: direct matches (0) and the wider search (2)
        assert counts[0] > 0 and counts[2] > 0 and counts[1] < 0.05 * counts.sum(), counts
    else:
        assert counts[1] == counts.sum()                 # random draws: RAIL's own code


def test_distances_equal_numpy(env):
    """The compiled Mahalanobis distances and colour counts equal RAIL's numpy expressions."""
    import pickle

    from rail.estimation.algos.cmnn import _computecolordata

    cfg, models, data, _ = env
    with open(models[False], "rb") as f:
        model = pickle.load(f)
    p = algorithms.stage_params(algorithms.get("cmnn"), cfg, "estimate")
    d = {k: v.copy() for k, v in data.items()}
    for c, e in zip(p["bands"], p["err_bands"]):
        m = np.isclose(d[c], 99.0)
        d[c][m] = np.nan
        d[e][m] = np.nan
    tc, te = _computecolordata(d, p["bands"], p["err_bands"])
    trc = model["train_color"]
    trc_t = np.ascontiguousarray(trc.T)
    md = np.empty(len(trc))
    dof = np.empty(len(trc), np.int64)
    distances = cmnn._kernels()[0]
    for i in range(0, len(tc), 7):
        distances(tc[i], te[i], trc_t, np.float32(1.0), md, dof)
        ref = np.nansum((tc[i] - trc) ** 2 / te[i] ** 2, axis=1, dtype="float")
        rdof = np.nansum((tc[i] ** 2 + trc ** 2 + 1.0) / (tc[i] ** 2 + trc ** 2 + 1.0),
                         axis=1, dtype="int")
        np.testing.assert_array_equal(md, ref)
        np.testing.assert_array_equal(dof, rdof)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("sub", [100, 37])
def test_runner_equals_one_rail_call_on_the_chunk(env, fast, sub):
    """Random selection (mode 0): sub-chunks of chunk 5 give RAIL's result for one call on
    the whole chunk with seed = seed + chunk_seed(estimate.seed, 5), whatever the size
    of the sub-chunks."""
    from rail.estimation.algos.cmnn import CMNNEstimator

    cfg, models, data, flags = env
    c = deep_update(cfg, {"algorithms": {"cmnn": {"fast": fast, "estimate": {"selection_mode": 0}}}})
    r = algorithms.Runner(algorithms.get("cmnn"), models[False], c, name=f"cmnn_run{fast}{sub}")
    assert (type(r.stage).__name__ == "CMNNfastEstimator") == fast
    r.begin_chunk(5)
    parts = [r.estimate({k: v[s:s + sub] for k, v in data.items()}, 5, seed=False)
             for s in range(0, len(flags), sub)]
    pdf = np.concatenate([p[0] for p in parts])
    ex = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    seed = 66 + algorithms.chunk_seed(c["estimate"]["seed"], 5)
    st = _stage(CMNNEstimator, models[False], c, seed=seed)
    ens = st.estimate({k: v.copy() for k, v in data.items()}).data
    loc, scale, ncm, ncol = _out(ens)
    bad = loc == 99.0
    assert bad.sum() == 3
    ref = ens.pdf(r.zgrid)
    ref[bad] = np.nan                                   # pzpipe: invalid PDF, see below
    np.testing.assert_array_equal(pdf, ref)
    np.testing.assert_array_equal(ex["pdf_loc"], np.where(bad, np.nan, loc))
    np.testing.assert_array_equal(ex["pdf_scale"], np.where(bad, np.nan, scale))
    np.testing.assert_array_equal(ex["n_match"], ncm)
    np.testing.assert_array_equal(ex["n_colors"], ncol)
    # and estimate_table (what the estimate jobs run) gives the same, with the bad flag
    t = estimate_table(r, data, flags, 5, 10, subchunk_rows=sub)
    np.testing.assert_array_equal(t.column("pdf_loc").to_numpy(),
                                  np.where(bad, np.nan, loc).astype(np.float32))
    f = t.column("flags").to_numpy()
    assert ((f & FLAG_PDF_BAD) != 0).tolist() == bad.tolist()


def test_other_chunks_get_other_draws(env):
    cfg, models, data, flags = env
    c = deep_update(cfg, {"algorithms": {"cmnn": {"estimate": {"selection_mode": 0}}}})
    r = algorithms.Runner(algorithms.get("cmnn"), models[False], c, name="cmnn_chunks")
    a = r.estimate(data, chunk_index=1)[1]["pdf_loc"]
    b = r.estimate(data, chunk_index=2)[1]["pdf_loc"]
    a2 = r.estimate(data, chunk_index=1)[1]["pdf_loc"]
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b, equal_nan=True)
