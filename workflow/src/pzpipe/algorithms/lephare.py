"""LePhare (template fitting, C++): RAIL's ``LephareInformer`` / ``LephareEstimator``
(pz-rail-lephare 2.0.4, lephare 1.0.0). Off by default; for users who have LePhare's
auxiliary data in a ``LEPHAREDIR``.

Why it is off, and what was not tested here (docs/estimators.md):
  * The ``lephare`` wheel ships the code, not the data. ``lp.prepare`` (run by RAIL's
    informer) reads ``$LEPHAREDIR/vega/VegaLCB.sed`` (and ``BD+17o4708.sed``,
    ``SunLCB.sed``) for every filter, the IGM opacity tables ``$LEPHAREDIR/opa/
    OPACITY.dat`` + ``tau*.out``, the filter curves (``filt/lsst/total_*.pb``), the galaxy,
    star and QSO SED libraries and the extinction laws of RAIL's LSST configuration; all
    come from the lephare-data repository over the network (``lephare data`` /
    ``lephare.data_retrieval.get_auxiliary_data``). RAIL's own files (BPZ's SEDs, the
    DC2LSST filter curves) cover neither the Vega/Sun spectra nor the IGM opacity, so
    LePhare cannot run on this (offline) machine; tried with RAIL's SEDs and filters:
    ``lp.prepare`` stops at ``vega/VegaLCB.sed``.
  * Therefore none of this module ran here: training, estimation, its speed (the
    planner's figure is LIneA's forecast), its memory, and the traps below are read from
    RAIL's code, not measured.

Traps read from RAIL's code, handled here:
  * Non-detections: RAIL builds LePhare's ``context`` from ``mag > 0``, ``err > 0`` and
    not NaN, so the pipeline's ``nondetect_val`` (99) would enter the fit as a detection
    at magnitude 99. ``input_transform`` turns non-detections into NaN (left out of the
    context) for training and estimation.
  * ``LEPHAREDIR`` must be set (and hold the data) before ``lephare`` is imported:
    ``finalize`` checks it and the files above and stops with one message naming what
    is missing.
  * The informer writes LePhare's libraries into a run directory next to ``LEPHAREWORK``
    and records its absolute path in the model: on a cluster, ``LEPHAREWORK`` must be on
    storage the estimate jobs see, and the model file cannot be moved without it.

Fast path: none. Extras: none.
"""

from __future__ import annotations

import os

import numpy as np

from ._base import Algorithm

REQUIRED_FILES = ("vega/VegaLCB.sed", "vega/BD+17o4708.sed", "vega/SunLCB.sed", "opa/OPACITY.dat")


def _finalize(params: dict, kind: str) -> dict:
    from .. import PipelineError

    ok, why = ALGORITHM.available()
    if not ok:
        raise PipelineError(
            f"algorithms.lephare is enabled but LePhare does not import ({why}). Install "
            f"pz-rail-lephare==2.0.4 and lephare==1.0.0, or disable it "
            f"(algorithms.lephare.enabled: false).")
    d = os.environ.get("LEPHAREDIR")
    if not d:
        raise PipelineError(
            "algorithms.lephare is enabled but LEPHAREDIR is not set. LePhare needs its "
            "auxiliary data (filters, SEDs, IGM opacity, Vega spectrum), which does not "
            "install with the wheel: fetch it with `lephare data` on a machine with internet "
            "access and set LEPHAREDIR to it (docs/estimators.md).")
    missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(d, f))]
    if missing:
        raise PipelineError(
            f"LEPHAREDIR={d} lacks {', '.join(missing)}: LePhare cannot prepare its "
            f"libraries. Fetch the auxiliary data with `lephare data` (docs/estimators.md).")
    return params


def input_transform(data: dict, params: dict) -> dict:
    """Non-detections (``nondetect_val``) -> NaN in magnitudes and errors, so that RAIL's
    LePhare context leaves them out."""
    nd = params["nondetect_val"]
    for b, e in zip(params["bands"], params["err_bands"]):
        m = np.isnan(data[b]) if np.isnan(nd) else np.isclose(data[b], nd)
        if m.any():
            data[b] = np.where(m, np.nan, data[b])
            data[e] = np.where(m, np.nan, data[e])
    return data


ALGORITHM = Algorithm(
    name="lephare",
    title="LePhare (template fitting, RAIL LePhare)",
    module="rail.estimation.algos.lephare",
    informer="LephareInformer",
    estimator="LephareEstimator",
    distribution="pz-rail-lephare",
    finalize=_finalize,
    input_transform=input_transform,
    enabled_by_default=False,
    requires=("lephare",),
)
