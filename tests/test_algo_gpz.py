"""GPz (pzpipe.algorithms.gpz) against RAIL's own GPzEstimator on the same model.

RAIL runs for real (pz-rail-gpz-v1). The pipeline's results (fast path and RAIL's own
class through the runner) must equal RAIL's GPzEstimator exactly: the PDF on the grid
(qp norm evaluated by scipy) and the Gaussian's loc/scale. RAIL is called on a sample
whose size and chunk_size are multiples of gpz.PAD, where RAIL's own results do not
depend on how the calls are cut; the runner pads every call to such a size.
The fast path's work is counted (``helpers.counting``): with it, every object goes through
FastGPz's own PDF evaluation (``_gauss.norm_pdf_grid``) and none through RAIL's
estimator; without it, the reverse.
"""
import numpy as np
import pytest
from helpers.counting import Through

from pzpipe import PipelineError, algorithms
from pzpipe.stages import train
from pzpipe.algorithms import _gauss, gpz
from pzpipe.run.config import REPO_ROOT, deep_update, load_config
from pzpipe.stages.estimate import estimate_table
from pzpipe.stages.samples import read_sample


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpz")
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {"training": {"max_rows": 1500}})
    model = str(d / "gpz.pkl")
    train.run("gpz", cfg, model, str(d / "gpz.json"))
    data = read_sample(cfg, dict(cfg["validation"], max_rows=1600))   # 50 x PAD
    data.pop("redshift")
    flags = data.pop("flags")
    assert (data["mag_u_lsst"] == 99.0).any()        # non-detections present
    return cfg, model, data, flags


def _rail(cfg, model, data, chunk_size=320, **over):
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    algo = algorithms.get("gpz")
    _, est = algo.classes()
    params = {**algorithms.stage_params(algo, cfg, "estimate"), "chunk_size": chunk_size,
              "calculated_point_estimates": [], **over}
    stage = est.make_stage(name=f"bare_gpz_{chunk_size}", model=model, output_mode="return",
                           **params)
    ens = stage.estimate({k: v.copy() for k, v in data.items()}).data
    z = np.linspace(0.0, 3.0, 301)
    return (ens.pdf(z), np.asarray(ens.objdata["loc"]).ravel(),
            np.asarray(ens.objdata["scale"]).ravel())


def _runner(cfg, model, fast, name):
    c = deep_update(cfg, {"algorithms": {"gpz": {"fast": fast}}})
    r = algorithms.Runner(algorithms.get("gpz"), model, c, name=name)
    assert (r.fast_path is not None) == fast
    assert isinstance(r.fast, gpz.FastGPz) == fast
    return r


@pytest.fixture
def through(monkeypatch):
    from rail.estimation.algos.gpz import GPzEstimator

    t = Through(monkeypatch)
    t.wrap(_gauss, "norm_pdf_grid", "fast_pdf")                   # rows: loc
    t.wrap(GPzEstimator, "_process_chunk", "rail", lambda self, start, end, *a, **k: end - start)
    return t


@pytest.mark.parametrize("fast", [True, False])
def test_runner_equals_rail(env, fast, through):
    cfg, model, data, _ = env
    pdf_ref, loc, scale = _rail(cfg, model, data)
    r = _runner(cfg, model, fast, f"gpz_eq_{fast}")
    through.reset()
    pdf, extras = r.estimate(data)
    n = len(data["object_id"])                       # a multiple of PAD: no padding rows
    if fast:
        assert through["fast_pdf"] == n and through["rail"] == 0, through
    else:
        assert through["fast_pdf"] == 0 and through["rail"] == n, through
    np.testing.assert_array_equal(pdf, pdf_ref)
    np.testing.assert_array_equal(extras["pdf_loc"], loc)
    np.testing.assert_array_equal(extras["pdf_scale"], scale)
    assert np.isfinite(pdf).all() and (extras["pdf_scale"] > 0).all()


def test_results_do_not_depend_on_call_sizes(env):
    """Sub-chunks of 1, 7, 97 rows (odd sizes: RAIL alone would change the last bits)."""
    cfg, model, data, flags = env
    data, flags = {k: v[:250] for k, v in data.items()}, flags[:250]
    ref = estimate_table(_runner(cfg, model, True, "gpz_sz0"), data, flags, 0, 10,
                         subchunk_rows=10000)
    for sub in (7, 97):
        for fast in (True, False):
            t = estimate_table(_runner(cfg, model, fast, f"gpz_sz{sub}{fast}"), data, flags, 0,
                               10, subchunk_rows=sub)
            assert t.equals(ref), (sub, fast)
    r = _runner(cfg, model, True, "gpz_one")
    one, ex1 = r.estimate({k: v[5:6] for k, v in data.items()})
    full, exf = r.estimate(data)
    np.testing.assert_array_equal(one[0], full[5])
    np.testing.assert_array_equal(ex1["pdf_loc"][0], exf["pdf_loc"][5])


def test_nonfinite_magnitudes_are_non_detections(env):
    """NaN/inf magnitudes reach GPz as non-detections (the band's limit), like 99."""
    cfg, model, data, _ = env
    r = _runner(cfg, model, True, "gpz_nan")
    base = {k: v[:64].copy() for k, v in data.items()}
    base["mag_g_lsst"][:10] = 99.0
    ref = r.estimate(base)
    for bad in (np.nan, np.inf, -np.inf):
        d = {k: v.copy() for k, v in base.items()}
        d["mag_g_lsst"][:10] = bad
        for fast in (True, False):
            pdf, ex = _runner(cfg, model, fast, f"gpz_nan{bad}{fast}").estimate(d)
            np.testing.assert_array_equal(pdf, ref[0])
            np.testing.assert_array_equal(ex["pdf_loc"], ref[1]["pdf_loc"])


def test_mag_limits_follow_the_bands(env):
    """RAIL's GPz takes mag_limits.values() in dict order: the pipeline passes them in band
    order, one error replacement value per band, and names a band without a limit."""
    cfg, _, _, _ = env
    c = deep_update(cfg, {"bands": ["y", "g", "r", "i", "z"], "ref_band": "i"})
    p = algorithms.stage_params(algorithms.get("gpz"), c, "estimate")
    assert list(p["mag_limits"]) == p["bands"] == [f"mag_{b}_lsst" for b in "ygriz"]
    assert p["mag_limits"]["mag_y_lsst"] == 27.05 and p["mag_limits"]["mag_g_lsst"] == 29.04
    assert p["replace_error_vals"] == [0.1] * 5
    user = {f"mag_{b}_lsst": 27.0 for b in "ugriz"}                 # no y
    c2 = deep_update(cfg, {"algorithms": {"gpz": {"estimate": {"mag_limits": user}}}})
    with pytest.raises(PipelineError, match=r"algorithms\.gpz\.estimate\.mag_limits.*mag_y_lsst"):
        algorithms.stage_params(algorithms.get("gpz"), c2, "estimate")
    c3 = deep_update(cfg, {"algorithms": {"gpz": {"inform": {"replace_error_vals": [0.1] * 5}}}})
    with pytest.raises(PipelineError, match=r"replace_error_vals.*5 values for 6 bands"):
        algorithms.stage_params(algorithms.get("gpz"), c3, "inform")


def test_model_file_is_byte_reproducible(tmp_path):
    """Two trainings in two processes give the same model bytes (RAIL's GP keeps a
    wall-clock time, zeroed by gpz.clean_model)."""
    import subprocess
    import sys

    code = """
import sys, hashlib
from pzpipe.run.config import load_config, deep_update, REPO_ROOT
from pzpipe.stages import train
cfg = deep_update(load_config(REPO_ROOT / "config" / "config.yaml"),
                  {"training": {"max_rows": 600}, "algorithms": {"gpz": {"inform": {"max_iter": 20}}}})
train.run("gpz", cfg, sys.argv[1], sys.argv[1] + ".json")
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
"""
    shas = []
    for i in range(2):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"m{i}.pkl")],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        shas.append(r.stdout.strip().splitlines()[-1])
    assert shas[0] == shas[1]
