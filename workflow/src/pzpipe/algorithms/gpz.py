"""GPz (sparse Gaussian process regression, one Gaussian PDF per object): RAIL's
``GPzInformer`` / ``GPzEstimator`` (pz-rail-gpz-v1).

Parameters the pipeline sets:
  * ``mag_limits`` in band order, restricted to the configured bands (see the traps);
  * ``replace_error_vals``: RAIL's default has 6 values; one per configured band;
  * ``chunk_size`` (estimate): a multiple of ``PAD`` (see the traps).

RAIL traps (pz-rail-gpz-v1 2.0.3) and what the pipeline does:
  * RAIL's ``_prepare_data`` zips the bands with ``mag_limits.values()``: the limits are
    taken in the dict's order, not by band name, so with any band list other than RAIL's
    default ugrizy (e.g. without u) every band would get another band's limit. ``finalize``
    rebuilds ``mag_limits`` in band order (RAIL's default limits, or the user's), and
    refuses a band without a limit.
  * RAIL's default ``replace_error_vals`` has six values and the estimator raises unless
    there is one per band: the pipeline sets one per band (RAIL's default value, 0.1).
  * Non-finite magnitudes: reported as rejected by GPz; not reproduced with 2.0.3, whose
    ``_prepare_data`` replaces NaN/inf magnitudes, like ``nondetect_val``, with the band's
    limit (error 1.0 in log space) and non-finite or non-positive errors with
    ``replace_error_vals``; the pipeline's partition turns every non-detection into
    ``nondetect_val`` anyway. tests/test_algo_gpz.py checks that NaN, inf and 99 give the
    same result.
  * The prediction uses matrix products (OpenBLAS); an object's result changes in the last
    bits with the number of rows of the call when that is not a multiple of the kernel's
    row tile (measured: calls of 1-3, 5-7, 9-11, ... rows, or 513, differ from one large
    call by up to 1e-13). Every call is padded to a multiple of ``PAD`` rows with copies of
    its last row (dropped afterwards), so the results do not depend on how a chunk is cut
    into sub-chunks (the audit's recomputation, ``estimate.subchunk_rows``). Checked on
    this machine's OpenBLAS kernel (0.3.31, DYNAMIC_ARCH); another CPU may use other
    kernels and other last bits.
  * Training draws its train/validation split from numpy's global RNG (``pzpipe.stages.train``
    seeds it from ``training.seed``) and prints its iterations to stdout.
  * The trained ``GP`` keeps the wall-clock time of its last iteration (``timer``): two
    identical trainings gave different model files. ``clean_model`` zeroes it (prediction
    does not use it), so model files are byte-reproducible.

Fast path: ``FastGPz`` runs RAIL's own data preparation and ``GP.predict`` and evaluates the
Gaussian on the grid with scipy's arithmetic, skipping what RAIL does besides (qp ensemble,
``zmode`` on the grid, a full ``gc.collect`` per call).

PDF: Gaussian (``qp.stats.norm``). Extras ``pdf_loc``, ``pdf_scale``: its exact parameters
(float64 in RAIL), from which the PDF on any grid follows.
"""

from __future__ import annotations

import math

import numpy as np

from pzpipe.core.columns import ID_COL
from . import _gauss
from ._base import Algorithm, FastPath, rail_default

PAD = 32          # calls are padded to a multiple of this many rows


def _params(cfg: dict, kind: str) -> dict:
    if kind != "estimate":
        return {}
    rows = max(10000, int(cfg["estimate"].get("subchunk_rows", 2000)))
    return {"chunk_size": PAD * math.ceil(rows / PAD)}


def _finalize(params: dict, kind: str) -> dict:
    from .. import PipelineError

    bands = list(params["bands"])
    lims = params.get("mag_limits") or rail_default(ALGORITHM, kind, "mag_limits")
    missing = [b for b in bands if b not in lims]
    if missing:
        raise PipelineError(
            f"config error at 'algorithms.gpz.{kind}.mag_limits': no limiting magnitude for "
            f"{missing[0]}; GPz replaces non-detections with it. Give one per band column "
            f"({', '.join(bands)}).")
    params["mag_limits"] = {b: float(lims[b]) for b in bands}
    rev = params.get("replace_error_vals")
    if rev is None:
        default = list(rail_default(ALGORITHM, kind, "replace_error_vals"))
        params["replace_error_vals"] = [float(default[0])] * len(bands)
    elif len(rev) != len(bands):
        raise PipelineError(
            f"config error at 'algorithms.gpz.{kind}.replace_error_vals': {len(rev)} values "
            f"for {len(bands)} bands; give one per band.")
    return params


def _pad(n: int) -> int:
    return (-n) % PAD


def estimate_chunk(runner, inp):
    """RAIL's GPzEstimator on ``inp`` padded to a multiple of ``PAD`` rows."""
    n = len(inp[ID_COL])
    k = _pad(n)
    if k:
        inp = {c: np.concatenate([v, np.repeat(v[-1:], k)]) for c, v in inp.items()}
    pdf, anc = runner.rail_call(inp)
    return pdf[:n], {c: np.asarray(v)[:n] for c, v in anc.items()}


def clean_model(model):
    if hasattr(model, "timer"):
        model.timer = 0.0
    return model


class FastGPz:
    """RAIL's GPz prediction without RAIL's estimator around it (see the module docstring).

    ``model``: the trained ``GP`` (what GPzInformer writes); ``params``: the estimator's
    RAIL parameters (``stage_params``)."""

    def __init__(self, model, params):
        self.model = model
        self.p = dict(params)
        self.p.setdefault("log_errors", rail_default(ALGORITHM, "estimate", "log_errors"))
        self.zgrid = np.linspace(params["zmin"], params["zmax"], params["nzbins"])

    def estimate(self, data):
        """(pdf (N, nz) on the grid, {'loc', 'scale'}); ``data`` is modified (pass copies)."""
        from rail.estimation.algos.gpz import _prepare_data

        p = self.p
        x = _prepare_data(data, p["bands"], p["err_bands"], p["nondetect_val"], p["mag_limits"],
                          p["log_errors"], p["replace_error_vals"])
        n = x.shape[0]
        k = _pad(n)
        if k:
            x = np.concatenate([x, np.repeat(x[-1:], k, axis=0)])
        mu, total_v, _, _, _ = self.model.predict(x)
        loc = mu[:n, 0]
        scale = np.sqrt(total_v)[:n, 0]
        return _gauss.norm_pdf_grid(loc, scale, self.zgrid), {"loc": loc, "scale": scale}


FAST = FastPath(
    ref="pzpipe.algorithms.gpz:FastGPz",
    kind="standalone",
    verified={"pz-rail-gpz-v1": "2.0.3", "qp-prob": "1.1.4", "scipy": "1.17.1",
              "numpy": "2.4.6"},
    guarantee=("bit-identical PDFs on the grid and Gaussian parameters (loc, scale) to "
               "RAIL's GPzEstimator on the same padded calls (exact equality, "
               "tests/test_algo_gpz.py runs RAIL itself)"),
)

ALGORITHM = Algorithm(
    name="gpz",
    title="GPz (sparse Gaussian process, RAIL GPz_v1)",
    module="rail.estimation.algos.gpz",
    informer="GPzInformer",
    estimator="GPzEstimator",
    distribution="pz-rail-gpz-v1",
    extras=dict(_gauss.EXTRAS),
    extra_meta=_gauss.extra_meta("GPz"),
    extra_dtypes=dict(_gauss.EXTRA_DTYPES),
    params=_params,
    finalize=_finalize,
    estimate_chunk=estimate_chunk,
    ancillaries=_gauss.norm_ancillaries,
    clean_model=clean_model,
    fast=FAST,
    pdf_family="norm",
    bench={"rows": 40000},
)
