# Helpers that turn the (validated) config into file lists. Rule files contain rules only.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from snakemake.exceptions import WorkflowError

import pzpipe
from pzpipe import PipelineError
from pzpipe import algorithms, audit, estimate, export, partition, progress, train, trainset, validate
from pzpipe.jobs import logged
from pzpipe.config import config_hash, enabled_algorithms, resolve_path, validate_config
from pzpipe.layout import make_layout

try:
    CFG = validate_config(config)
    LAYOUT = make_layout(CFG)
except PipelineError as _exc:
    raise WorkflowError(f"pzpipe: {_exc}")

ALGOS = enabled_algorithms(CFG)
BATCHES = LAYOUT.batch_ids()
RESULTS = "results"
RELEASE_DIR = f"{RESULTS}/release"
VALIDATION_PLOTS = {k: f"{RESULTS}/validation/{k}.png" for k in ("scatter", "pit", "nz")}
VALIDATION_OUTPUTS = [f"{RESULTS}/validation/metrics.csv", f"{RESULTS}/validation/metrics.md",
                      *VALIDATION_PLOTS.values()]
PLANNING = CFG["inputs"]["descriptor"] is not None


wildcard_constraints:
    batch=r"b\d{6}",
    algo="|".join(ALGOS) if ALGOS else "none",


def batch_inputs(wildcards):
    """Input files of one batch (none in planning mode: the data may not exist yet)."""
    if PLANNING:
        return []
    return LAYOUT.batch_files(wildcards.batch)


TRAINSET_ON = CFG["trainset"].get("enabled", False)


def training_file(wildcards=None):
    """The training sample: the training-set maker's train split when it is enabled."""
    if TRAINSET_ON:
        return f"{RESULTS}/trainset/train.parquet"
    return resolve_path(CFG["training"]["file"])


def validation_file(wildcards=None):
    """The held-out sample: the training-set maker's test split when it is enabled."""
    if TRAINSET_ON:
        return f"{RESULTS}/trainset/test.parquet"
    return resolve_path(CFG["validation"]["file"])


def data_dir_inputs(algo):
    """The prepared data directory of ``algo``, if it declares one (rule prepare_data)."""
    if algorithms.get(algo).data_dir is None:
        return {}
    return {"algo_data": f"{RESULTS}/{algo}_data"}


def model_inputs(wildcards):
    return {"model": f"{RESULTS}/models/{wildcards.algo}/model.pkl",
            **data_dir_inputs(wildcards.algo)}


def train_inputs(wildcards):
    return {"training": training_file(), **data_dir_inputs(wildcards.algo)}


# Job sizes (mem_mb, runtime, partition) from measured throughput: pzpipe.plan.rule_resources
from pzpipe.plan import rule_resources


def config_params(*sections, algo=False):
    """A short hash of the config sections a rule depends on, declared as a rule param
    so that Snakemake reruns the rule (and only it and its dependants) when they change."""
    if not algo:
        return config_hash(CFG, list(sections))[:16]
    return lambda wc: config_hash(
        {**{s: CFG.get(s) for s in sections}, "algo": CFG["algorithms"][wc.algo]})[:16]


PARTITION_KEYS = ("inputs", "columns", "bands", "ref_band", "partition")


def audit_inputs(wildcards):
    out = {
        "release": RELEASE_DIR,
        "partitions": expand(f"{RESULTS}/partition/{{batch}}.parquet", batch=BATCHES),
        "models": expand(f"{RESULTS}/models/{{algo}}/model.pkl", algo=ALGOS),
        "sidecars": expand(f"{RESULTS}/models/{{algo}}/model.json", algo=ALGOS),
    }
    data_algos = algorithms.with_data_dir(ALGOS)
    if data_algos:     # re-estimation reads them
        out["algo_data"] = expand(f"{RESULTS}/{{algo}}_data", algo=data_algos)
    return out
