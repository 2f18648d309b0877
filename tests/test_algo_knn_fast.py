"""pzpipe.algorithms.knn_fast.FastKNN against RAIL's KNearNeighEstimator (pz-rail-sklearn 2.0.3).

RAIL's informer is trained on the DC2 training file shipped with pz-rail-base (a
3-point sigma grid to keep the test short) and its estimator called for real on
shuffled DC2 validation objects with extra non-detections and copies of training
objects; FastKNN must give exactly (``assert_array_equal``) the PDFs RAIL's ensemble
gives on the grid (``ens.pdf(zgrid)``, what the pipeline stores) and RAIL's ``zmode``.
The slow test compares the whole validation sample (20,449 objects).

Every FastKNN call is counted (``_fast``): all its objects go through the compiled
exponent and mixture kernels and none through RAIL's estimator.
"""
from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("rail.estimation.algos.k_nearneigh")

from helpers.counting import Through, rows_of  # noqa: E402

from pzpipe.algorithms import knn_fast  # noqa: E402
from pzpipe.algorithms.knn_fast import FastKNN, _exp_zero_below  # noqa: E402

from pzpipe.planning.bench import DC2_BANDS as BANDS  # noqa: E402
from pzpipe.planning.bench import DC2_RAIL_PARAMS as PARAMS  # noqa: E402
INFORM = dict(ngrid_sigma=3, nneigh_min=5, nneigh_max=7)


def _read(name):
    import tables_io
    from rail.utils.path_utils import find_rail_file

    d = tables_io.read(find_rail_file(f"examples_data/testdata/{name}"))["photometry"]
    d = {k: np.asarray(v) for k, v in d.items()}
    d["object_id"] = d.pop("id")
    return d


def _train(tmp_path, training, name="knn", **over):
    from rail.core.data import DataStore
    from rail.estimation.algos.k_nearneigh import KNearNeighInformer

    DataStore.allow_overwrite = True
    path = str(tmp_path / f"{name}.pkl")
    st = KNearNeighInformer.make_stage(name=f"inf_{name}_{time.time_ns()}", model=path,
                                       **{**PARAMS, **INFORM, **over})
    st.inform({k: v.copy() for k, v in training.items()})
    with open(path, "rb") as f:
        return path, pickle.load(f)


def _save(tmp_path, model, name):
    path = str(tmp_path / f"{name}.pkl")
    with open(path, "wb") as f:
        pickle.dump(model, f)
    return path


def rail_knn(model_path, data, **over):
    """One bare RAIL KNearNeighEstimator call on all of ``data`` (on copies)."""
    from rail.core.data import DataStore
    from rail.estimation.algos.k_nearneigh import KNearNeighEstimator

    DataStore.allow_overwrite = True
    n = len(data["object_id"])
    st = KNearNeighEstimator.make_stage(name=f"knn_ref_{time.time_ns()}", model=model_path,
                                        output_mode="return", calculated_point_estimates=[],
                                        chunk_size=max(n, 1), **{**PARAMS, **over})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return st.estimate({k: np.array(v, copy=True) for k, v in data.items()}).data


def assert_same_as_rail(pdf, anc, ens, zgrid):
    np.testing.assert_array_equal(pdf, np.asarray(ens.pdf(zgrid)).reshape(len(pdf), -1))
    np.testing.assert_array_equal(anc["zmode"], np.asarray(ens.ancil["zmode"]).ravel())


@pytest.fixture
def through(monkeypatch):
    from rail.estimation.algos.k_nearneigh import KNearNeighEstimator

    t = Through(monkeypatch)
    t.wrap(knn_fast, "_exponents", "kernel_exp")                  # rows: means
    t.wrap(knn_fast, "_mixture", "kernel_mix", rows_of(6))        # rows: out
    t.wrap(KNearNeighEstimator, "_process_chunk", "rail",
           lambda self, start, end, *a, **k: end - start)
    return t


def _fast(f, d, through):
    """``f.estimate(d)``, counted: every object through both compiled kernels, none
    through RAIL's estimator."""
    n = len(d["object_id"])
    through.reset()
    pdf, anc = f.estimate(d)
    assert through["kernel_exp"] == n and through["kernel_mix"] == n, through
    assert through["rail"] == 0, through
    return pdf, anc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("knnfast")
    training = _read("test_dc2_training_9816.hdf5")
    path, model = _train(tmp, training)
    return dict(tmp=tmp, training=training, path=path, model=model,
                val=_read("test_dc2_validation_9816.hdf5"))


def _hostile_sample(setup, n, seed):
    """n shuffled validation objects with extra non-detections and training copies."""
    val, tr = setup["val"], setup["training"]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(val["object_id"]))[:n]
    d = {k: v[idx].copy() for k, v in val.items()}
    mags = PARAMS["bands"]
    rows = rng.choice(n, 50, replace=False)
    for r in rows[:40]:                               # 1-5 detected bands
        for b in rng.choice(6, rng.integers(1, 6), replace=False):
            d[mags[b]][r] = 99.0
    for r in rows[40:45]:                             # no detected band
        for b in range(6):
            d[mags[b]][r] = 99.0
    for r, t in zip(rows[45:50], rng.choice(len(tr["object_id"]), 5, replace=False)):
        for m in mags:                                # a training object: distance 0
            d[m][r] = tr[m][t]
    return d


def test_equals_one_rail_call(setup, through):
    d = _hostile_sample(setup, 3000, seed=3)
    before = {k: v.copy() for k, v in d.items()}
    f = FastKNN(setup["model"], PARAMS, subchunk=256)
    pdf, anc = _fast(f, d, through)
    for k in d:                                       # inputs untouched
        np.testing.assert_array_equal(d[k], before[k])
    assert pdf.shape == (3000, 301) and pdf.dtype == np.float64
    assert_same_as_rail(pdf, anc, rail_knn(setup["path"], d), f.zgrid)


def test_one_object_and_empty(setup, through):
    d = _hostile_sample(setup, 100, seed=5)
    f = FastKNN(setup["model"], PARAMS)
    for i in (0, 9):
        one = {k: v[i:i + 1] for k, v in d.items()}
        pdf, anc = _fast(f, one, through)
        assert_same_as_rail(pdf, anc, rail_knn(setup["path"], one), f.zgrid)
    pdf, anc = f.estimate({k: v[:0] for k, v in d.items()})
    assert pdf.shape == (0, 301) and len(anc["zmode"]) == 0


def test_more_neighbours_than_eight(setup, through):
    """nneigh >= 8 changes numpy's summation scheme for the weights (pairwise blocks)."""
    model = dict(setup["model"], nneigh=9)
    path = _save(setup["tmp"], model, "knn9")
    d = _hostile_sample(setup, 800, seed=7)
    f = FastKNN(model, PARAMS)
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_knn(path, d), f.zgrid)


def test_reference_magnitude_model(setup, through):
    """A model trained with only_colors=True (RAIL then adds the ref_band magnitude)."""
    path, model = _train(setup["tmp"], setup["training"], name="knn_ref", only_colors=True)
    assert model["only_colors"] is True and model["kdtree"].data.shape[1] == 6
    d = _hostile_sample(setup, 800, seed=11)
    f = FastKNN(model, PARAMS)
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_knn(path, d), f.zgrid)


def test_nan_as_the_non_detection_value(setup, through):
    d = _hostile_sample(setup, 800, seed=19)
    for m in PARAMS["bands"]:
        d[m][d[m] == 99.0] = np.nan
    f = FastKNN(setup["model"], {**PARAMS, "nondetect_val": np.nan})
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_knn(setup["path"], d, nondetect_val=np.nan), f.zgrid)


def test_float64_catalogue(setup, through):
    d = {k: (v.astype(np.float64) if v.dtype == np.float32 else v)
         for k, v in _hostile_sample(setup, 800, seed=13).items()}
    f = FastKNN(setup["model"], PARAMS)
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_knn(setup["path"], d), f.zgrid)


def test_four_bands(setup, through):
    sub = {"bands": [f"mag_{b}_lsst" for b in "griz"],
           "err_bands": [f"mag_err_{b}_lsst" for b in "griz"]}
    path, model = _train(setup["tmp"], setup["training"], name="knn4", **sub)
    assert model["kdtree"].data.shape[1] == 3
    d = _hostile_sample(setup, 500, seed=23)
    f = FastKNN(model, {**PARAMS, **sub})
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_knn(path, d, **sub), f.zgrid)


def test_bad_input_is_a_clear_error(setup):
    d = _hostile_sample(setup, 100, seed=17)
    f = FastKNN(setup["model"], PARAMS)
    with pytest.raises(KeyError, match="mag_z_lsst"):
        f.estimate({k: v for k, v in d.items() if k != "mag_z_lsst"})
    d["mag_g_lsst"][4] = np.nan                       # RAIL: sklearn rejects NaN too
    with pytest.raises(ValueError, match="row 4"):
        f.estimate(d)
    with pytest.raises(ValueError):
        rail_knn(setup["path"], d)


def test_skipped_exponents_underflow_to_zero():
    """FastKNN skips exp(x) for x < -746 because numpy rounds them to exactly 0 (a term
    +0 changes no sum); the check runs when the class is built, and is active here."""
    cut = _exp_zero_below()
    assert cut == -746.0
    x = -np.abs(np.random.default_rng(0).standard_cauchy(200_000)) * 1e3 + cut
    assert not np.any(np.exp(x[x < cut]))


@pytest.mark.slow
def test_whole_dc2_validation_sample(setup, through):
    d = setup["val"]
    f = FastKNN(setup["model"], PARAMS)
    pdf, anc = _fast(f, d, through)
    assert_same_as_rail(pdf, anc, rail_knn(setup["path"], d), f.zgrid)
