"""pzpipe.algorithms.dnf_fast.FastDNF against RAIL's DNFEstimator (pz-rail-dnf 2.0.4), run for real.

The model is RAIL's DNFInformer trained on the DC2 training file shipped with
pz-rail-base; RAIL's estimator is called ONCE on the whole chunk (``chunk_size`` >= its
length), which is the pipeline's contract for DNF (RAIL cuts every object's neighbour
list at the call's maximum inlier count). Every comparison is exact equality
(``assert_array_equal``: NaN equals NaN) of the PDF values of RAIL's ensemble on the grid
(``ens.objdata["yvals"]``, what the pipeline stores for RAIL's own DNF) and of every ancil
array.

The fast tests use shuffled subsets of the DC2 validation file with extra
non-detections (objects with 1-5 and 0 detected bands), NaN magnitudes and errors, and
copies of training objects (distance 0: RAIL's roll of the neighbour list). The slow
test compares the whole validation sample (20,449 objects; RAIL needs ~7 GB for it).

Every FastDNF call is counted (``_fast``): all its objects go through the compiled
preselection/metric kernel and the compiled PDF normalisation, and RAIL's own
``preselection`` sees exactly the objects FastDNF reports as handed to it (``n_exact``:
none, except in the distance-tie test). Equality with RAIL alone would not notice a
FastDNF that calls RAIL's code.
"""
from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("rail.estimation.algos.dnf")

from helpers.counting import Through  # noqa: E402

from pzpipe.algorithms import dnf_fast  # noqa: E402
from pzpipe.algorithms.dnf_fast import FastDNF  # noqa: E402

from pzpipe.planning.bench import DC2_BANDS as BANDS  # noqa: E402
from pzpipe.planning.bench import DC2_RAIL_PARAMS as PARAMS  # noqa: E402
ANCIL = ("DNF_Z", "photozerr", "photozerr_param", "photozerr_fit", "DNF_ZN",
         "nneighbors", "de1", "d1", "id1")


def _read(name):
    import tables_io
    from rail.utils.path_utils import find_rail_file

    d = tables_io.read(find_rail_file(f"examples_data/testdata/{name}"))["photometry"]
    d = {k: np.asarray(v) for k, v in d.items()}
    d["object_id"] = d.pop("id")
    return d


def _train(tmp_path, training, name="dnf"):
    from rail.core.data import DataStore
    from rail.estimation.algos.dnf import DNFInformer

    DataStore.allow_overwrite = True
    path = str(tmp_path / f"{name}.pkl")
    st = DNFInformer.make_stage(name=f"inf_{name}_{time.time_ns()}", model=path, **PARAMS)
    st.inform({k: v.copy() for k, v in training.items()})
    with open(path, "rb") as f:
        return path, pickle.load(f)


def rail_dnf(model_path, data, **over):
    """One bare RAIL DNFEstimator call on all of ``data`` (on copies: RAIL mutates)."""
    from rail.core.data import DataStore
    from rail.estimation.algos.dnf import DNFEstimator

    DataStore.allow_overwrite = True
    n = len(data["object_id"])
    st = DNFEstimator.make_stage(name=f"dnf_ref_{time.time_ns()}", model=model_path,
                                 output_mode="return", calculated_point_estimates=[],
                                 chunk_size=max(n, 1), **{**PARAMS, **over})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return st.estimate({k: np.array(v, copy=True) for k, v in data.items()}).data


def assert_same_as_rail(pdf, anc, ens, zgrid):
    # what the pipeline stores (algorithms.runner: RAIL's node values on the pipeline grid)
    np.testing.assert_array_equal(pdf, np.asarray(ens.objdata["yvals"]).reshape(len(pdf), -1))
    for k in ANCIL:
        ref = np.asarray(ens.ancil[k]).ravel()
        assert anc[k].dtype == ref.dtype, k
        np.testing.assert_array_equal(anc[k], ref, err_msg=k)


@pytest.fixture
def through(monkeypatch):
    import rail.estimation.algos.dnf as rail_dnf_mod

    t = Through(monkeypatch)
    t.wrap(dnf_fast, "_preselect_metric", "kernel")             # rows: V64
    t.wrap(dnf_fast, "_qp_interp_grid", "pdf_kernel")           # rows: raw PDFs
    t.wrap(rail_dnf_mod, "preselection", "rail_preselection")   # rows: V (KD tree)
    return t


def _fast(f, d, through, exact=False):
    """``f.estimate(d)``, counted: every object through the compiled kernels; RAIL's own
    preselection only for the objects with distance ties (none unless ``exact``)."""
    n = len(d["object_id"])
    through.reset()
    pdf, anc = f.estimate(d)
    assert through["kernel"] == n and through["pdf_kernel"] == n, through
    assert through["rail_preselection"] == f.n_exact, through
    if exact:
        assert 0 < f.n_exact < n, f.n_exact
    else:
        assert f.n_exact == 0, f.n_exact
    return pdf, anc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dnffast")
    training = _read("test_dc2_training_9816.hdf5")
    path, model = _train(tmp, training)
    val = _read("test_dc2_validation_9816.hdf5")
    return dict(tmp=tmp, training=training, path=path, model=model, val=val)


def _hostile_sample(setup, n, seed):
    """n shuffled validation objects with extra non-detections, NaNs and training copies."""
    val, tr = setup["val"], setup["training"]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(val["object_id"]))[:n]
    d = {k: v[idx].copy() for k, v in val.items()}
    mags = PARAMS["bands"]
    errs = PARAMS["err_bands"]
    rows = rng.choice(n, 60, replace=False)
    for r in rows[:40]:                               # 1-5 detected bands
        for b in rng.choice(6, rng.integers(1, 6), replace=False):
            d[mags[b]][r] = 99.0
    for r in rows[40:45]:                             # no detected band
        for b in range(6):
            d[mags[b]][r] = 99.0
    for r, t in zip(rows[45:48], rng.choice(len(tr["object_id"]), 3, replace=False)):
        for m, e in zip(mags, errs):                  # a training object: distance 0
            d[m][r] = tr[m][t]
            d[e][r] = tr[e][t]
    d[mags[2]][rows[48]] = np.nan                     # NaN magnitude (RAIL: set to 0)
    d[errs[3]][rows[49]] = np.nan                     # NaN error (RAIL: mag set to 0)
    return d


def test_equals_one_rail_call_on_the_chunk(setup, through):
    """1,500 objects, computed by FastDNF in blocks of 100 (pass 1) / 256 (pass 2)."""
    d = _hostile_sample(setup, 1500, seed=3)
    before = {k: v.copy() for k, v in d.items()}
    f = FastDNF(setup["model"], PARAMS, subchunk=256, work_elems=100 * 4000)
    pdf, anc = _fast(f, d, through)
    for k in d:                                       # inputs untouched
        np.testing.assert_array_equal(d[k], before[k])
    assert pdf.shape == (1500, 301) and pdf.dtype == np.float64
    assert_same_as_rail(pdf, anc, rail_dnf(setup["path"], d), f.zgrid)


def test_chunk_coupling_is_kept(setup, through):
    """RAIL's result for an object depends on the other objects of the call; FastDNF
    reproduces one call on whatever chunk it is given."""
    d = _hostile_sample(setup, 1500, seed=3)
    a = {k: v[:150] for k, v in d.items()}
    f = FastDNF(setup["model"], PARAMS, subchunk=64, work_elems=50 * 4000)
    ens_a = rail_dnf(setup["path"], a)
    ens_all = rail_dnf(setup["path"], d)
    # the coupling is real on this data: A alone differs from A inside the chunk
    assert not np.array_equal(ens_a.pdf(f.zgrid), ens_all.pdf(f.zgrid)[:150])
    pdf_a, anc_a = _fast(f, a, through)
    assert_same_as_rail(pdf_a, anc_a, ens_a, f.zgrid)
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, ens_all, f.zgrid)


def test_one_object_and_empty(setup, through):
    d = _hostile_sample(setup, 200, seed=5)
    f = FastDNF(setup["model"], PARAMS)
    for i in (0, 7):
        one = {k: v[i:i + 1] for k, v in d.items()}
        pdf, anc = _fast(f, one, through)
        assert_same_as_rail(pdf, anc, rail_dnf(setup["path"], one), f.zgrid)
    pdf, anc = f.estimate({k: v[:0] for k, v in d.items()})
    assert pdf.shape == (0, 301) and sorted(anc) == sorted(ANCIL)
    assert all(len(v) == 0 for v in anc.values()) and anc["id1"].dtype == np.int32


@pytest.mark.parametrize("mode", [0, 2])
def test_other_metrics(setup, mode, through):
    """selection_mode 0 (ENF) and 2 (DNF); 1 (ANF, RAIL's default) is tested above."""
    d = _hostile_sample(setup, 400, seed=11 + mode)
    f = FastDNF(setup["model"], {**PARAMS, "selection_mode": mode})
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_dnf(setup["path"], d, selection_mode=mode), f.zgrid)


def test_nan_as_the_non_detection_value(setup, through):
    """nondetect_val=NaN: RAIL replaces NaN magnitudes (not 99s) by the limits."""
    d = _hostile_sample(setup, 400, seed=19)
    for m in PARAMS["bands"]:
        d[m][d[m] == 99.0] = np.nan
    f = FastDNF(setup["model"], {**PARAMS, "nondetect_val": np.nan})
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_dnf(setup["path"], d, nondetect_val=np.nan), f.zgrid)


def test_float64_model(setup, through):
    """A model trained on float64 magnitudes, with float64 and float32 catalogues."""
    as64 = lambda d: {k: (v.astype(np.float64) if v.dtype == np.float32 else v)  # noqa: E731
                      for k, v in d.items()}
    path, model = _train(setup["tmp"], as64(setup["training"]), name="dnf64")
    assert model["train_mag"].dtype == np.float64
    f = FastDNF(model, PARAMS)
    for d in (as64(_hostile_sample(setup, 400, seed=17)),   # float64 catalogue
              _hostile_sample(setup, 400, seed=18)):         # float32 catalogue (mixed)
        pdf, anc = _fast(f, d, through)
        assert_same_as_rail(pdf, anc, rail_dnf(path, d), f.zgrid)


def test_distance_ties_use_rails_own_neighbour_search(setup, through):
    """Two training objects duplicated with other redshifts: an object whose 4,000 nearest
    include a duplicate has an exact distance tie, whose order only sklearn's KD tree
    knows; FastDNF hands those objects (and only those: ``_fast`` counts them) to RAIL's
    own preselection, and the chunk, compiled and RAIL-searched objects mixed, must still
    equal RAIL. (With 40 duplicates every object had a tie and nothing compiled was
    tested.)"""
    tr = setup["training"]
    rng = np.random.default_rng(23)
    dup = rng.choice(len(tr["object_id"]), 2, replace=False)
    t2 = {k: np.concatenate([v, v[dup]]) for k, v in tr.items()}
    t2["redshift"][-2:] = (t2["redshift"][-2:] + 0.7) % 3.0
    path, model = _train(setup["tmp"], t2, name="dnfdup")
    d = _hostile_sample(setup, 300, seed=29)
    f = FastDNF(model, PARAMS)
    pdf, anc = _fast(f, d, through, exact=True)
    assert_same_as_rail(pdf, anc, rail_dnf(path, d), f.zgrid)


def test_small_training_set(setup, through):
    """1,500 training objects: fewer than RAIL's 4,000 preselected, so every training
    object is a candidate (sorted by distance)."""
    tr = setup["training"]
    idx = np.random.default_rng(37).permutation(len(tr["object_id"]))[:1500]
    path, model = _train(setup["tmp"], {k: v[idx] for k, v in tr.items()}, name="dnfsmall")
    d = _hostile_sample(setup, 300, seed=41)
    f = FastDNF(model, PARAMS)
    assert f.P == 1500
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_dnf(path, d), f.zgrid)


def test_four_bands(setup, through):
    """A model on griz only (4 bands: 5 fit coefficients)."""
    sub = {**PARAMS, "bands": [f"mag_{b}_lsst" for b in "griz"],
           "err_bands": [f"mag_err_{b}_lsst" for b in "griz"]}
    from rail.core.data import DataStore
    from rail.estimation.algos.dnf import DNFInformer

    DataStore.allow_overwrite = True
    path = str(setup["tmp"] / "dnf4.pkl")
    DNFInformer.make_stage(name=f"inf_dnf4_{time.time_ns()}", model=path, **sub).inform(
        {k: v.copy() for k, v in setup["training"].items()})
    with open(path, "rb") as fh:
        model = pickle.load(fh)
    d = _hostile_sample(setup, 300, seed=43)
    f = FastDNF(model, sub)
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_dnf(path, d, bands=sub["bands"],
                                           err_bands=sub["err_bands"]), f.zgrid)


def test_bad_input_is_a_clear_error(setup):
    d = _hostile_sample(setup, 100, seed=31)
    f = FastDNF(setup["model"], PARAMS)
    with pytest.raises(KeyError, match="mag_err_g_lsst"):
        f.estimate({k: v for k, v in d.items() if k != "mag_err_g_lsst"})
    d["mag_r_lsst"][3] = np.inf
    with pytest.raises(ValueError, match="mag_r_lsst"):
        f.estimate(d)
    with pytest.raises(ValueError, match="selection_mode"):
        FastDNF(setup["model"], {**PARAMS, "selection_mode": 5})


@pytest.mark.slow
def test_whole_dc2_validation_sample(setup, through):
    """All 20,449 validation objects in one chunk, as one RAIL call (RAIL: ~7 GB, ~1 min)."""
    d = setup["val"]
    f = FastDNF(setup["model"], PARAMS)
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_dnf(setup["path"], d), f.zgrid)
