"""LePhare (template fitting, C++): RAIL's ``LephareInformer`` / ``LephareEstimator``
(pz-rail-lephare 2.0.4, lephare 1.0.0).

Data (offline): LePhare's auxiliary files come from ``resources/lephare/`` (a subset of the
lephare-data repository, unpacked by the make targets; PROVENANCE.md says which files and
why), at the path of ``algorithms.lephare.lepharedir`` (schema default
``resources/lephare/data``). Nothing is downloaded: lephare's downloader
(``lephare.data_retrieval``) is only called by ``lephare data``/``get_auxiliary_data``,
which RAIL 2.0.4 does not call; a missing file stops the job with a message naming it.

What the pipeline runs:
  * ``prepare_data`` (rule, once): LePhare's library build (``lp.prepare``: filters,
    SED library, model magnitudes) of the **galaxy** library of RAIL's LSST default
    configuration (COSMOS templates, extinction laws, emission lines) on the pipeline's
    redshift grid, into ``results/lephare_data/inform_lephare`` (LEPHAREWORK). RAIL's
    informer would also build its star and QSO libraries; the pipeline's PDF (LePhare's
    ``BAY_ZG``, RAIL's default ``posterior_output``) is the galaxy posterior and does not
    depend on them (docs/estimators.md), so they are not built (``ZPHOTLIB`` = the galaxy
    library only).
  * ``train``: RAIL's ``LephareInformer`` with ``do_prepare=False`` on the library above
    (zero-point offsets; zeros unless ``lephare.AUTO_ADAPT`` is set).
  * ``estimate``: RAIL's ``LephareEstimator`` (``run_dir`` = the library directory of this
    run), or the fast path ``lephare_fast.FastLephare``: its tolerance kernel by default
    (PDFs within 1e-9 of their maximum of LePhare's; the library in cache-sized tiles,
    a vectorised exponential), or with ``algorithms.lephare.exact: true`` its exact one
    (LePhare's C++ arithmetic in LePhare's order, bit-identical), compiled with numba.

Traps handled here:
  * Non-detections: RAIL builds LePhare's ``context`` from ``mag > 0`` etc., so the
    pipeline's ``nondetect_val`` (99) would enter the fit as a detection at magnitude 99.
    ``input_transform`` turns non-detections into NaN, which lephare turns into -99/-99 (a
    band LePhare leaves out of the fit). RAIL's LSST config sets ``GLB_CONTEXT=0``
    (LePhare then ignores RAIL's context and uses every band with a valid flux).
  * ``LEPHAREDIR``/``LEPHAREWORK`` are read by lephare at import time (and by its C++ code
    through ``get_lephare_env``): they are set from the config before lephare is imported
    (and lephare reloaded if it was imported with other values).
  * Absolute paths: RAIL records LEPHAREDIR paths (filters, SED list, ``PARA_OUT``) and
    its run directory in the model. ``clean_model`` replaces them by ``$LEPHAREDIR`` /
    ``$LEPHAREWORK``, filled in again at estimate time from this run's config and data
    directory: the model file does not depend on where the run directory lives.
  * RAIL's informer places its run directory at ``$LEPHAREWORK/../<stage name>``; the
    pipeline's training stage is named ``inform_lephare`` (``pzpipe.stages.train``), so with
    ``LEPHAREWORK=<data dir>/inform_lephare`` it is the library directory itself.
  * Threads: lephare's C++ is OpenMP and starts cpu_count - 1 threads by default (55 on
    an Apollo node, whatever the job was given). ``use_env`` sets ``OMP_NUM_THREADS=1``
    (unless set) before lephare's first import; estimate workers pin one thread anyway
    (``OMP_NUM_THREADS=1`` and threadpoolctl, ``pzpipe.stages.estimate``), which also
    makes the PDF sums run in one fixed order (bit-reproducible audit).
  * lephare 1.0.0 always reads the Bethermin+12 dust-emission list (``ADD_DUSTEM`` is
    tested as a non-empty Python list): its one listed template is in the data subset.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import numpy as np

from ._base import Algorithm, DataDir, FastPath, stage_params

LIB_RUN = "inform_lephare"          # RAIL's run directory name = the informer stage's name
GAL_LIB_OUT = "LSST_GAL_MAG"        # RAIL's LSST default galaxy magnitude library
# files of LEPHAREDIR read by the configuration the pipeline runs (checked up front)
REQUIRED_FILES = (
    "vega/VegaLCB.sed", "vega/BD+17o4708.sed", "vega/SunLCB.sed", "opa/OPACITY.dat",
    "alloutputkeys.txt", "examples/output.para", "sed/GAL/COSMOS_SED/COSMOS_MOD.list",
    "sed/GAL/BETHERMIN12/BETHERMIN12_MOD.list",
    *(f"filt/lsst/total_{b}.pb" for b in "ugrizy"),
)
# model-config keys that hold LEPHAREDIR paths (RAIL's defaults, built at import time)
PATH_KEYS = {
    "FILTER_REP": "filt",
    "GAL_SED": "sed/GAL/COSMOS_SED/COSMOS_MOD.list",
    "PARA_OUT": "examples/output.para",
    "STAR_SED": "sed/STAR/STAR_MOD_ALL.list",
    "QSO_SED": "sed/QSO/SALVATO09/AGN_MOD.list",
}

FAST = FastPath(
    ref="pzpipe.algorithms.lephare_fast:FastLephare",
    kind="standalone",
    verified={"lephare": "1.0.0", "pz-rail-lephare": "2.0.4", "pz-rail-base": "2.0.11",
              "qp-prob": "1.1.4", "numpy": "2.4.6", "numba": "0.68.1",
              "llvmlite": "0.50.0"},
    guarantee=("within 1e-9 of RAIL's LephareEstimator (lephare 1.0.0, one OpenMP thread) "
               "with the default tolerance kernel: every PDF within 1e-9 of its maximum, "
               "point estimates within 1e-9, tested against RAIL itself in "
               "tests/test_algo_lephare.py (DC2 objects with non-detections and NaN; "
               "measured max 6e-13 there, 1.1e-12 with RAIL's default library); "
               "bit-identical with algorithms.lephare.exact: true (exact equality, same test)"),
)


DEFAULT_LEPHAREDIR = "resources/lephare/data"
# the checkout (where `make lephare-data` unpacks the data): relative lepharedir paths are
# relative to it, not to the run directory (Snakemake's --directory)
CHECKOUT = Path(__file__).resolve().parents[4]


def lepharedir(cfg: dict) -> str:
    """Absolute LEPHAREDIR of ``cfg`` (``algorithms.lephare.lepharedir``; a relative
    path is relative to the repository checkout)."""
    block = cfg["algorithms"].get("lephare") or {}
    return str((CHECKOUT / (block.get("lepharedir") or DEFAULT_LEPHAREDIR)).resolve())


def check_lepharedir(d: str) -> None:
    from .. import PipelineError

    missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(d, f))]
    if missing:
        raise PipelineError(
            f"algorithms.lephare.lepharedir={d} lacks {', '.join(missing)}: LePhare cannot "
            f"build or read its libraries, and the pipeline downloads nothing. Unpack the "
            f"data shipped with the pipeline (`make lephare-data`, from "
            f"resources/lephare/lephare-data-subset.tar.xz) or point lepharedir at a full "
            f"lephare-data checkout.")


def use_env(lephare_dir: str | None, lephare_work: str | None) -> None:
    """Set LEPHAREDIR / LEPHAREWORK for lephare (before its import, or reload it: lephare
    and its C++ code read them at import time)."""
    if "lephare" not in sys.modules:
        # lephare starts cpu_count - 1 OpenMP threads unless told: the pipeline's
        # prepare_data/train jobs are one-core jobs and estimate workers pin 1 thread
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    changed = False
    for var, val in (("LEPHAREDIR", lephare_dir), ("LEPHAREWORK", lephare_work)):
        if val is not None and os.environ.get(var) != val:
            os.environ[var] = val
            changed = True
    lp = sys.modules.get("lephare")
    if lp is not None and (changed or lp.LEPHAREDIR != os.environ.get("LEPHAREDIR")):
        _quiet(importlib.reload, lp)


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` with lephare's C++/Python chatter (stdout) sent to stderr (the log)."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        return fn(*args, **kwargs)


def _paths(d: str) -> dict:
    return {f"lephare.{k}": os.path.join(d, v) for k, v in PATH_KEYS.items()}


def _params(cfg: dict, kind: str) -> dict:
    d = lepharedir(cfg)
    use_env(d, None)
    if kind == "inform":
        return {"do_prepare": False, "lephare.ZPHOTLIB": GAL_LIB_OUT, **_paths(d)}
    return {}


def _finalize(params: dict, kind: str) -> dict:
    from .. import PipelineError

    d = os.environ["LEPHAREDIR"]          # set by _params from the config
    check_lepharedir(d)
    data_dir = params.pop("run_dir")
    work = os.path.join(data_dir, LIB_RUN)
    use_env(d, work)
    ok, why = ALGORITHM.available()
    if not ok:
        raise PipelineError(
            f"algorithms.lephare is enabled but LePhare does not import ({why}). Install "
            f"pz-rail-lephare==2.0.4 and lephare==1.0.0, or disable it "
            f"(algorithms.lephare.enabled: false).")
    if kind == "estimate":
        params["run_dir"] = work
    return params


def input_transform(data: dict, params: dict) -> dict:
    """Non-detections (``nondetect_val``) -> NaN in magnitudes and errors, so that
    LePhare leaves them out of the fit (lephare turns NaN into its -99 "no data")."""
    nd = params["nondetect_val"]
    for b, e in zip(params["bands"], params["err_bands"]):
        m = np.isnan(data[b]) if np.isnan(nd) else np.isclose(data[b], nd)
        if m.any():
            data[b] = np.where(m, np.nan, data[b])
            data[e] = np.where(m, np.nan, data[e])
    return data


def _subst(value, old: str, new: str):
    return value.replace(old, new) if isinstance(value, str) else value


def clean_model(model: dict) -> dict:
    """The model without this machine's paths: LEPHAREDIR -> ``$LEPHAREDIR``, the run
    directory -> ``$LEPHAREWORK`` (filled in again by ``resolve_model``)."""
    d = os.environ["LEPHAREDIR"]
    out = dict(model)
    out["run_dir"] = "$LEPHAREWORK"
    for key in ("lephare_config", "star_config", "gal_config", "qso_config"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _subst(v, d, "$LEPHAREDIR") for k, v in out[key].items()}
    return out


def clean_params(params: dict) -> dict:
    """RAIL parameters as the release records them: LEPHAREDIR (as set for this run, and
    its resolved form) -> ``$LEPHAREDIR`` in every string value."""
    d = os.environ.get("LEPHAREDIR")
    if not d:
        return params
    dirs = sorted({d.rstrip("/"), os.path.realpath(d)}, key=len, reverse=True)

    def sub(v):
        if isinstance(v, str):
            for x in dirs:
                v = v.replace(x, "$LEPHAREDIR")
        return v

    return {k: sub(v) for k, v in params.items()}


def resolve_model_config(config: dict, lephare_dir: str) -> dict:
    """A model's LePhare config with ``$LEPHAREDIR`` replaced by ``lephare_dir``."""
    return {k: _subst(v, "$LEPHAREDIR", lephare_dir) for k, v in config.items()}


def _before_call(runner, chunk_index: int, offset: int) -> None:
    """RAIL path: fill the model's ``$LEPHAREDIR`` paths in once (the stage's config).
    Fast path: the kernel ``algorithms.lephare.exact`` asks for."""
    if runner.fast is not None:
        runner.fast.exact = bool(runner.cfg["algorithms"]["lephare"].get("exact", False))
    stage = runner.stage
    if stage is not None and not getattr(stage, "_pzpipe_resolved", False):
        stage.lephare_config = resolve_model_config(stage.lephare_config,
                                                    os.environ["LEPHAREDIR"])
        stage._pzpipe_resolved = True


def lephare_config(params: dict) -> tuple[dict, dict]:
    """(LePhare keymap dict, galaxy sub-config) of RAIL's informer for ``params`` (RAIL's
    LSST defaults, the path keys, the user's ``lephare.*`` / ``gal.*`` keys, RAIL's
    ``Z_STEP`` from the pipeline grid)."""
    from rail.estimation.algos import lephare as rl

    config = dict(rl.lsst_default_config)
    gal = dict(rl.gal_default_config)
    for k, v in params.items():
        if k.startswith("lephare."):
            config[k[len("lephare."):]] = v
        elif k.startswith("gal."):
            gal[k[len("gal."):]] = v
    dz = (params["zmax"] - params["zmin"]) / (params["nzbins"] - 1)
    config["Z_STEP"] = f"{dz},{params['zmin']},{params['zmax']}"   # RAIL's informer
    return config, gal


_BUILD_TIME = re.compile(r"^(CREATION_DATE) .*$|^(# File written automatically) at \S+ (by .*)$",
                         re.M)


def _drop_build_times(work: str) -> None:
    """LePhare writes the wall-clock time of the build into the text files that describe
    its library (``*.doc``: ``CREATION_DATE``; ``*_config.yaml``: ``# File written
    automatically at <time>``). Those lines are replaced by time-free ones so that the
    same configuration gives byte-identical library files (the release bundles them;
    tests/test_determinism.py). LePhare reads neither line back."""
    for root, _, names in os.walk(work):
        for n in names:
            if not n.endswith((".doc", ".yaml")):
                continue
            path = os.path.join(root, n)
            with open(path) as f:
                text = f.read()
            new = _BUILD_TIME.sub(lambda m: (f"{m.group(1)} (removed for reproducibility)"
                                             if m.group(1) else f"{m.group(2)} {m.group(3)}"),
                                  text)
            if new != text:
                with open(path, "w") as f:
                    f.write(new)


def prepare_data(cfg: dict, out_dir: str) -> None:
    """LePhare's library build (filters, galaxy SED library, model magnitudes) into
    ``out_dir/inform_lephare`` (LEPHAREWORK of the training and estimate jobs)."""
    import logging
    import time

    log = logging.getLogger("pzpipe.algorithms")
    work = os.path.join(os.path.abspath(out_dir), LIB_RUN)
    os.makedirs(work, exist_ok=True)
    params = stage_params(ALGORITHM, cfg, "inform", out_dir)
    use_env(os.environ["LEPHAREDIR"], work)
    import lephare as lp

    config, gal = lephare_config(params)
    t0 = time.time()
    gal["LIB_ASCII"] = "NO"                 # ASCII copies of the libraries: not read
    _quiet(lp.prepare, config, star_config=None, gal_config=gal, qso_config=None)
    _drop_build_times(work)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(work) for f in fs)
    log.info("LePhare library in %s: %.1f MB, built in %.1f s", work, size / 1e6,
             time.time() - t0)


ALGORITHM = Algorithm(
    name="lephare",
    title="LePhare (template fitting, RAIL LePhare)",
    module="rail.estimation.algos.lephare",
    informer="LephareInformer",
    estimator="LephareEstimator",
    distribution="pz-rail-lephare",
    params=_params,
    finalize=_finalize,
    data_dir=DataDir(param="run_dir", prepare=prepare_data),
    input_transform=input_transform,
    clean_model=clean_model,
    clean_params=clean_params,
    before_call=_before_call,
    fast=FAST,
    requires=("lephare",),
    settings={"lepharedir": {
        "type": "string", "default": DEFAULT_LEPHAREDIR,
        "description": "LEPHAREDIR: LePhare's auxiliary data (filters, SEDs, IGM opacity, "
                       "Vega); a relative path is relative to the repository checkout; on a "
                       "cluster, storage the jobs see. The make targets unpack resources/lephare/"
                       "lephare-data-subset.tar.xz there (resources/lephare/PROVENANCE.md)"},
              "exact": {
        "type": "boolean", "default": False,
        "description": "fast path's kernel: false (default) = the tolerance kernel, PDFs "
                       "within 1e-9 of their maximum of RAIL's LephareEstimator's (~3x faster); "
                       "true = the bit-identical one (docs/estimators.md, LePhare)"}},
    bench={"rows": 4000, "reference_hours": 24.0 * 24, "rail_pipeline": True},
)
