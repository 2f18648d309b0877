"""TPZ (random forest of prediction trees): RAIL's ``TPZliteInformer`` / ``TPZliteEstimator``
(pz-rail-tpz).

Parameters the pipeline sets: none beyond the shared ones.

RAIL traps handled here:
  * TPZ is not seeded inside RAIL: it draws from numpy's global RNG, stdlib ``random``
    and unseeded ``np.random.default_rng()`` (``mlz_utils/data.py``), so two runs differ.
    ``seed_global_rng``: the runner seeds numpy and ``random`` per chunk from
    ``estimate.seed`` and the chunk index, and makes every unseeded ``default_rng()``
    a child of a seeded ``SeedSequence`` while RAIL runs; ``pzpipe.stages.train`` does the same
    from ``training.seed`` for the informer.

Fast path: ``tpz_fast.TPZfastEstimator``, RAIL's estimator with its per-object, per-tree
prediction loop replaced by one prediction per tree for the whole chunk (RAIL's code
otherwise, called in RAIL's order, so the seeding above is unchanged).

Extras: none.
"""

from __future__ import annotations

from ._base import Algorithm, FastPath

FAST = FastPath(
    ref="pzpipe.algorithms.tpz_fast:TPZfastEstimator",
    kind="estimator",
    verified={"pz-rail-tpz": "2.1.2", "pz-rail-base": "2.0.11", "scikit-learn": "1.9.1",
              "qp-prob": "1.1.4", "numpy": "2.4.6"},
    guarantee=("bit-identical PDFs and zmode to RAIL's TPZliteEstimator with the same "
               "seeding (exact equality, tests/test_algo_tpz.py runs RAIL itself)"),
)

ALGORITHM = Algorithm(
    name="tpz",
    title="TPZ (random forest, RAIL TPZ_lite)",
    module="rail.estimation.algos.tpz_lite",
    informer="TPZliteInformer",
    estimator="TPZliteEstimator",
    distribution="pz-rail-tpz",
    seed_global_rng=True,
    fast=FAST,
    bench={"rows": 10000, "reference_hours": 9.0},
)
