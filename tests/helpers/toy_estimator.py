"""A toy estimator declared outside pzpipe, for tests/test_toy_estimator.py: RAIL's
reference TrainZ (every object gets the training sample's n(z)), registered through the
config's ``algorithm_modules`` with one setting of its own. Nothing else in the
repository names it: the config schema, the default config, the throughput file
(its ``unmeasured`` entry) and the release take it from the registry."""
from pzpipe.algorithms import Algorithm

ALGORITHM = Algorithm(
    name="trainz",
    title="TrainZ (RAIL's reference estimator: the training n(z) for every object)",
    module="rail.estimation.algos.train_z",
    informer="TrainZInformer",
    estimator="TrainZEstimator",
    distribution="pz-rail-base",
    enabled_by_default=False,
    settings={"label": {"type": "string", "default": "toy",
                        "description": "a setting of the toy's own (validated from here)"}},
)
