"""FlexZBoost (conditional density estimation with XGBoost): RAIL's ``FlexZBoostInformer`` /
``FlexZBoostEstimator`` (pz-rail-flexzboost, FlexCode).

Parameters the pipeline sets: none beyond the shared ones.

RAIL traps handled elsewhere, generically:
  * FlexCode asks joblib for ``n_jobs=-1`` (loky processes) when predicting: the runner
    forces joblib's sequential backend (one core per worker).
  * Training: ``MultiOutputRegressor(n_jobs=-1)`` with loky processes makes the model's
    pickle bytes depend on joblib's batching; ``pzpipe.stages.train`` trains with threads.

Fast path: ``fzboost_fast.patched`` swaps FlexCode's per-object Python post-processing
(normalize, remove_bumps, sharpen; ~70% of the estimate time) for numba kernels doing the
same arithmetic in the same order, inside ``flexcode.core`` while RAIL's estimate runs.

Extras: none.
"""

from __future__ import annotations

from ._base import Algorithm, FastPath

FAST = FastPath(
    ref="pzpipe.algorithms.fzboost_fast:patched",
    kind="context",
    verified={"flexcode": "0.2.3", "pz-rail-flexzboost": "2.0.3", "numpy": "2.4.6",
              "numba": "0.68.1", "llvmlite": "0.50.0"},
    guarantee=("bit-identical PDFs to RAIL's FlexZBoostEstimator (exact equality, "
               "tests/test_algo_fzboost.py runs RAIL itself and checks the fast path was active)"),
)

ALGORITHM = Algorithm(
    name="fzboost",
    title="FlexZBoost (RAIL FlexZBoost)",
    module="rail.estimation.algos.flexzboost",
    informer="FlexZBoostInformer",
    estimator="FlexZBoostEstimator",
    distribution="pz-rail-flexzboost",
    fast=FAST,
    bench={"rows": 20000, "reference_hours": 9.0, "rounding": True,   # LIneA: FlexZBoost ~9 h
           "reference_obj_s_slot": 274},     # LIneA pz-compute, measured on Apollo
)
