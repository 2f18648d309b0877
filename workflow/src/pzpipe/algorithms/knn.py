"""kNN (Gaussian mixture of nearest neighbours' redshifts): RAIL's ``KNearNeighInformer`` /
``KNearNeighEstimator`` (pz-rail-sklearn).

Parameters the pipeline sets: none beyond the shared ones.

RAIL traps: RAIL's own ``zmean`` point estimate crashes (mixmod + scipy 1.17); the
pipeline computes its point estimates from the grid PDF and asks RAIL for none
(``calculated_point_estimates: []``, set by the runner for every estimator).

Fast path: ``knn_fast.FastKNN``, the tree query and the Gaussian mixture on the grid
vectorised (numba, with scipy's norm.pdf arithmetic and qp's normalisations in the same
order). Bit-identical PDFs and zmode to RAIL's ``KNearNeighEstimator`` on the DC2 sample
(tests/test_algo_knn_fast.py).

Extras: none.
"""

from __future__ import annotations

from ._base import Algorithm, FastPath

FAST = FastPath(
    ref="pzpipe.algorithms.knn_fast:FastKNN",
    kind="standalone",
    verified={"pz-rail-sklearn": "2.0.3", "scikit-learn": "1.9.1", "numpy": "2.4.6",
              "scipy": "1.17.1", "qp-prob": "1.1.4", "pz-rail-base": "2.0.11",
              "numba": "0.68.1", "llvmlite": "0.50.0"},
    guarantee=("bit-identical PDFs and zmode to RAIL's KNearNeighEstimator on the DC2 "
               "validation sample (tests/test_algo_knn_fast.py runs RAIL itself)"),
)

ALGORITHM = Algorithm(
    name="knn",
    title="kNN (RAIL KNearNeigh, scikit-learn)",
    module="rail.estimation.algos.k_nearneigh",
    informer="KNearNeighInformer",
    estimator="KNearNeighEstimator",
    distribution="pz-rail-sklearn",
    fast=FAST,
    bench={"rows": 40000},
)
