"""kNN (Gaussian mixture of nearest neighbours' redshifts): RAIL's ``KNearNeighInformer`` /
``KNearNeighEstimator`` (pz-rail-sklearn).

Parameters the pipeline sets: none beyond the shared ones.

RAIL traps: RAIL's own ``zmean`` point estimate crashes (mixmod + scipy 1.17); the
pipeline computes its point estimates from the grid PDF and asks RAIL for none
(``calculated_point_estimates: []``, set by the runner for every estimator).

Fast path: none yet. A standalone class ``C(model, params)`` with
``C.estimate(data) -> (pdf on the grid, ancil dict)`` plugs in with one line here:
``fast=FastPath(ref="pzpipe.algorithms.knn_fast:FastKNN", kind="standalone",
verified={...}, guarantee="...")``.

Extras: none.
"""

from __future__ import annotations

from ._base import Algorithm

ALGORITHM = Algorithm(
    name="knn",
    title="kNN (RAIL KNearNeigh, scikit-learn)",
    module="rail.estimation.algos.k_nearneigh",
    informer="KNearNeighInformer",
    estimator="KNearNeighEstimator",
    distribution="pz-rail-sklearn",
    bench={"rows": 40000},
)
