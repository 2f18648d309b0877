"""LePhare in the pipeline against RAIL's own LephareEstimator (pz-rail-lephare 2.0.4,
lephare 1.0.0), run for real on LePhare's data shipped in resources/lephare/.

A small galaxy library keeps this to seconds of fitting (the library build is most of the
time: ~20-60 s): 5 COSMOS templates, E(B-V) in {0, 0.2}, one emission-line dispersion, a
61-node z grid. The objects: 240 DC2 validation objects (non-detections at 99), plus
objects with one band pushed 3 mag off (LePhare's ``rm_discrepant`` band removal runs),
a NaN error, a zero error and an object without any detection.

  (a) the pipeline with the fast path off (``Runner``, fast: false) equals RAIL's own
      ``LephareEstimator`` run on the same model and objects (non-detections as NaN):
      exact equality of the PDFs on the pipeline grid;
  (b) the fast path's exact kernel (``lephare_fast.FastLephare``, ``exact: true``) equals
      RAIL exactly too, and every object goes through its compiled kernel (counted;
      forcing ``fast: false`` makes the count 0 and the test fail);
  (c) the fast path's tolerance kernel (the default, ``exact: false``) is within the
      stated tolerance of RAIL: every PDF on the pipeline grid within 1e-9 of its own
      maximum (absolute difference), point estimates (mode, mean, quantiles) within 1e-9;
      the DC2 objects go through the tolerance kernel (counted: RAIL's code, or the exact
      kernel, makes the count 0); the objects LePhare fits again without a band
      (rm_discrepant) and those without any detection through the exact kernel; the
      same with tiny tiles and blocks (bins split across tiles, the running minimum
      rescaling the sums) and with LePhare's chi-square form (ALG_SFF_MAX = 0);
  (d) other installed versions: RAIL's own code with one warning line.
"""
from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest

pytest.importorskip("rail.estimation.algos.lephare")
pytest.importorskip("numba")

from pzpipe import algorithms  # noqa: E402
from pzpipe.algorithms import _base  # noqa: E402
from pzpipe.algorithms import lephare as lpalgo  # noqa: E402
from pzpipe.algorithms import lephare_fast  # noqa: E402
from pzpipe.run.config import REPO_ROOT, deep_update, load_config  # noqa: E402

LEPHAREDIR = REPO_ROOT / "resources" / "lephare" / "data"
TEMPLATES = ("Ell1_A_0", "Sa_A_0", "Sc_A_0", "SB0_A_0", "SB11_A_0")

if not (LEPHAREDIR / "sed").exists():
    pytest.skip("LePhare data not unpacked (make lephare-data)", allow_module_level=True)


def _read(name, n, seed):
    import tables_io
    from rail.utils.path_utils import find_rail_file

    d = tables_io.read(find_rail_file(f"examples_data/testdata/{name}"))["photometry"]
    idx = np.random.default_rng(seed).permutation(len(d["id"]))[:n]
    return {k: np.asarray(v)[idx] for k, v in d.items()}


def _objects():
    d = _read("test_dc2_validation_9816.hdf5", 240, 2)
    bands = [f"mag_{b}_lsst" for b in "ugrizy"]
    errs = [f"mag_err_{b}_lsst" for b in "ugrizy"]
    extra = {k: v[:12].copy() for k, v in d.items()}
    for i in range(8):                  # one band 3 mag off: rm_discrepant runs
        b = bands[i % 6]
        if extra[b][i] != 99.0:
            extra[b][i] += 3.0
    extra[errs[2]][8] = np.nan          # NaN error
    extra[errs[3]][9] = 0.0             # zero error (LePhare drops the band)
    for b, e in zip(bands, errs):       # no detection at all
        extra[b][10] = 99.0
        extra[e][10] = 99.0
    extra["id"] = extra["id"] + 10_000_000
    out = {k: np.concatenate([d[k], extra[k]]) for k in d}
    out.pop("redshift")
    out["object_id"] = out.pop("id")
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The library (prepare_data), RAIL's informer, the cleaned model, the objects."""
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    tmp = tmp_path_factory.mktemp("lephare")
    listfile = tmp / "MOD.list"
    listfile.write_text("".join(f"COSMOS_SED/{t}.sed\n" for t in TEMPLATES))
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {"zgrid": {"nz": 61}, "algorithms": {"lephare": {
        "lepharedir": str(LEPHAREDIR),
        "inform": {"lephare.GAL_SED": str(listfile), "lephare.EB_V": "0.,0.2",
                   "gal.MOD_EXTINC": "3,5,3,5,3,5,3,5", "gal.EM_DISPERSION": "1."}}}})
    algo = algorithms.get("lephare")
    data_dir = str(tmp / "lephare_data")
    algo.data_dir.prepare(cfg, data_dir)
    train = _read("test_dc2_training_9816.hdf5", 300, 1)
    params = algorithms.stage_params(algo, cfg, "inform", data_dir)
    inf_cls, _ = algo.classes()
    stage = inf_cls.make_stage(name="inform_lephare", model=str(tmp / "rail_model.pkl"),
                               output_mode="return", **params)
    stage.inform(algo.input_transform({k: v.copy() for k, v in train.items()}, params))
    assert stage.model["run_dir"] == os.path.join(data_dir, lpalgo.LIB_RUN)
    with open(tmp / "rail_model.pkl", "wb") as f:
        pickle.dump(stage.model, f)
    model = algo.clean_model(stage.model)
    with open(tmp / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    return dict(cfg=cfg, algo=algo, data_dir=data_dir, model=str(tmp / "model.pkl"),
                rail_model=str(tmp / "rail_model.pkl"), data=_objects())


def _rail_own(env):
    """RAIL's LephareEstimator itself on RAIL's own (uncleaned) model, non-detections as
    NaN, one OpenMP thread; PDFs on the pipeline grid."""
    from threadpoolctl import threadpool_limits

    from pzpipe.algorithms.runner import grid_pdf
    from pzpipe.core.zgrid import from_config

    algo, cfg = env["algo"], env["cfg"]
    _, est_cls = algo.classes()
    p = algorithms.common_params(cfg)
    data = {k: np.array(v, copy=True) for k, v in env["data"].items()}
    for b, e in zip(p["bands"], p["err_bands"]):
        m = data[b] == 99.0
        data[b][m] = np.nan
        data[e][m] = np.nan
    keep = ("bands", "err_bands", "ref_band", "nondetect_val", "hdf5_groupname")
    stage = est_cls.make_stage(name="rail_own", model=env["rail_model"], output_mode="return",
                               calculated_point_estimates=[],
                               **{k: p[k] for k in keep})
    with threadpool_limits(1):
        ens = stage.estimate(data).data
    return grid_pdf(ens, from_config(cfg))


@pytest.fixture(scope="module")
def rail_pdf(env):
    return _rail_own(env)


def _runner(env, fast, name, exact=False):
    from threadpoolctl import threadpool_limits

    c = deep_update(env["cfg"], {"algorithms": {"lephare": {"fast": fast, "exact": exact}}})
    r = algorithms.Runner(env["algo"], env["model"], c, name=name, data_dir=env["data_dir"])
    with threadpool_limits(1):
        pdf, extras = r.estimate(env["data"])
    return r, pdf


def test_model_records_no_absolute_path(env):
    with open(env["model"], "rb") as f:
        model = pickle.load(f)
    text = repr(model)
    assert str(LEPHAREDIR) not in text and env["data_dir"] not in text
    assert model["run_dir"] == "$LEPHAREWORK"
    assert model["lephare_config"]["PARA_OUT"] == "$LEPHAREDIR/examples/output.para"
    assert model["lephare_config"]["ZPHOTLIB"] == lpalgo.GAL_LIB_OUT


def test_pipeline_rail_path_equals_rail(env, rail_pdf):
    r, pdf = _runner(env, False, "lp_rail")
    assert r.fast_path is None and r.stage is not None
    assert pdf.shape == (len(env["data"]["object_id"]), 61)
    np.testing.assert_array_equal(pdf, rail_pdf)


def test_exact_kernel_equals_rail_and_runs_compiled(env, rail_pdf, monkeypatch):
    n = len(env["data"]["object_id"])
    calls = {"rows": 0}
    kernel = lephare_fast.fit_chunk

    def counted(mags, *a, **kw):
        calls["rows"] += len(mags)
        return kernel(mags, *a, **kw)

    monkeypatch.setattr(lephare_fast, "fit_chunk", counted)
    r, pdf = _runner(env, True, "lp_fast", exact=True)
    assert r.fast.tolerance_rows == 0
    assert r.fast_path is not None and isinstance(r.fast, lephare_fast.FastLephare)
    assert calls["rows"] == n, calls
    np.testing.assert_array_equal(pdf, rail_pdf)
    # some objects did go through rm_discrepant (first best chi2 above its threshold)
    fl = r.fast
    inp = env["algo"].input_transform({k: np.array(v, copy=True) for k, v in
                                       env["data"].items()}, r.params)
    nb = len(fl.bands)
    ab, sab, abo = np.empty(nb), np.empty(nb), np.empty(nb)
    bn, bu = np.empty(nb, np.int64), np.empty(nb, np.int64)
    chi2, avo, avt = (np.empty(fl.fluxT.shape[1]) for _ in range(3))
    sure = np.empty(fl.fluxT.shape[1], dtype=bool)
    lo, hi, use_prior = fl.prior
    above = 0
    for j in range(n):
        mags = np.array([inp[b][j] for b in fl.bands], dtype=np.float64)
        errs = np.array([inp[e][j] for e in fl.err_bands], dtype=np.float64)
        nbul = lephare_fast._prep(mags, errs, nb, fl.gbcont, fl.contforb, 0, fl.min_err,
                                  fl.fac_err, fl.a0, ab, sab, bn, bu, abo)
        cmin = lephare_fast._fit(fl.fluxT, fl.mag0, fl.red, fl.dm_in_lo, fl.dm_in_hi,
                                 fl.dm_out_lo, fl.dm_out_hi, fl.plo, fl.phi, ab, sab, bn, bu,
                                 nbul, lo, hi, use_prior, fl.funz0, chi2, avo, avt, sure)
        above += cmin > fl.threshold
    assert fl.threshold == 500.0 and above >= 3, above


def test_fast_path_in_slices_equals_rail(env, rail_pdf, monkeypatch):
    """The chunk estimated in slices of FastLephare.SLICE objects (here 100: two full
    slices and one of 52) is the same, bit for bit (exact kernel)."""
    monkeypatch.setattr(lephare_fast.FastLephare, "SLICE", 100)
    calls = []
    kernel = lephare_fast.fit_chunk
    monkeypatch.setattr(lephare_fast, "fit_chunk",
                        lambda mags, *a: calls.append(len(mags)) or kernel(mags, *a))
    _, pdf = _runner(env, True, "lp_slices", exact=True)
    assert calls == [100, 100, len(rail_pdf) - 200], calls
    np.testing.assert_array_equal(pdf, rail_pdf)


TOL = 1e-9          # the tolerance kernel's stated bound (docs/estimators.md)


def _assert_within_tolerance(env, pdf, rail_pdf):
    """PDFs within TOL of each RAIL PDF's maximum; point estimates within TOL."""
    from pzpipe.core.zgrid import from_config
    from pzpipe.release.pointest import point_estimates

    assert pdf.shape == rail_pdf.shape
    peak = rail_pdf.max(axis=1)
    assert (peak > 0).sum() >= len(peak) - 1          # the object without detection: 0
    diff = np.abs(pdf - rail_pdf).max(axis=1)
    worst = int(np.argmax(diff / np.where(peak > 0, peak, 1.0)))
    assert np.all(diff <= TOL * peak), (worst, diff[worst], peak[worst])
    z = from_config(env["cfg"])
    ours, bad_o = point_estimates(pdf, z)
    theirs, bad_t = point_estimates(rail_pdf, z)
    np.testing.assert_array_equal(bad_o, bad_t)
    for key in ours:
        np.testing.assert_allclose(ours[key][~bad_t], theirs[key][~bad_t], rtol=0, atol=TOL,
                                   err_msg=key)
    return diff / np.where(peak > 0, peak, 1.0)


def _count_tolerance_calls(monkeypatch):
    calls = {"rows": 0, "tolerance_rows": 0}
    kernel = lephare_fast.fit_chunk_tol

    def counted(mags, *a):
        out, ntol = kernel(mags, *a)
        calls["rows"] += len(mags)
        calls["tolerance_rows"] += ntol
        return out, ntol

    monkeypatch.setattr(lephare_fast, "fit_chunk_tol", counted)
    return calls


def test_tolerance_kernel_is_within_its_tolerance_of_rail(env, rail_pdf, monkeypatch):
    n = len(env["data"]["object_id"])
    calls = _count_tolerance_calls(monkeypatch)
    r, pdf = _runner(env, True, "lp_tol")          # the default: exact: false
    assert r.fast_path is not None and not r.fast.exact
    rel = _assert_within_tolerance(env, pdf, rail_pdf)
    # the 240 DC2 objects went through the tolerance kernel; of the 12 added ones, those
    # with one band 3 mag off (rm_discrepant) and the one without detection did not
    assert calls["rows"] == n and 240 <= calls["tolerance_rows"] < n, calls
    assert r.fast.tolerance_rows == calls["tolerance_rows"]
    assert rel.max() > 0        # not the exact kernel's bits: the tolerance kernel ran
    print(f"\n[lephare tolerance] max |dPDF|/max PDF {rel.max():.2e}, "
          f"median {np.median(rel):.2e}; {calls}")


@pytest.mark.parametrize("tile,block,sff_max", [(7, 3, lephare_fast.ALG_SFF_MAX),
                                                (64, 64, 0.0)])
def test_tolerance_kernel_tiles_blocks_and_chi2_form(env, rail_pdf, monkeypatch, tile, block,
                                                     sff_max):
    """Tiles of 7 models (the 61 bins' models split across tiles; a later tile lowers the
    running minimum and rescales the sums) in blocks of 3 objects; or LePhare's own
    chi-square form for every object (ALG_SFF_MAX = 0): within the same tolerance."""
    monkeypatch.setattr(lephare_fast.FastLephare, "TILE", tile)
    monkeypatch.setattr(lephare_fast.FastLephare, "BLOCK", block)
    monkeypatch.setattr(lephare_fast.FastLephare, "ALG_SFF_MAX", sff_max)
    calls = _count_tolerance_calls(monkeypatch)
    r, pdf = _runner(env, True, f"lp_tiles{tile}")
    ft = r.fast.tiles()[0]
    assert ft.shape[2] == tile and ft.shape[0] == -(-r.fast.fluxT.shape[1] // tile)
    assert calls["tolerance_rows"] >= 240, calls
    _assert_within_tolerance(env, pdf, rail_pdf)


def test_fast_path_rejects_what_it_does_not_implement(env):
    from pzpipe import PipelineError

    with open(env["model"], "rb") as f:
        model = pickle.load(f)
    params = algorithms.stage_params(env["algo"], env["cfg"], "estimate", env["data_dir"])
    bad = dict(model, lephare_config=dict(model["lephare_config"], ZFIX="YES"))
    with pytest.raises(PipelineError, match="ZFIX=YES is not supported"):
        lephare_fast.FastLephare(bad, params)


def test_other_versions_run_rail_with_one_warning(env, monkeypatch, caplog):
    monkeypatch.setattr(_base, "_WARNED", set())
    real = _base.installed_version
    monkeypatch.setattr(_base, "installed_version",
                        lambda dist: "0.9.9" if dist == "lephare" else real(dist))
    from rail.estimation.algos.lephare import LephareEstimator

    with caplog.at_level(logging.WARNING, logger="pzpipe.algorithms"):
        c = deep_update(env["cfg"], {"algorithms": {"lephare": {"fast": True}}})
        r = algorithms.Runner(env["algo"], env["model"], c, name="lp_guard",
                              data_dir=env["data_dir"])
    assert r.fast_path is None and type(r.stage) is LephareEstimator
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 1 and "lephare 0.9.9 (verified: 1.0.0)" in lines[0], lines


def test_missing_data_file_is_named(env, tmp_path):
    from pzpipe import PipelineError

    c = deep_update(env["cfg"], {"algorithms": {"lephare": {"lepharedir": str(tmp_path)}}})
    with pytest.raises(PipelineError, match=r"lacks vega/VegaLCB.sed.*downloads nothing"):
        algorithms.stage_params(env["algo"], c, "estimate", env["data_dir"])
    lpalgo.use_env(str(LEPHAREDIR), None)
