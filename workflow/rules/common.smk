# Helpers that turn the (validated) config into file lists. Rule files contain rules only.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from snakemake.exceptions import WorkflowError

import pzpipe
from pzpipe import PipelineError
from pzpipe import audit, estimate, export, partition, progress, train, trainset, validate
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
VALIDATION = validate.output_paths(RESULTS, ALGOS)    # rule validate's outputs by name
VALIDATION_OUTPUTS = [p for v in VALIDATION.values() for p in (v if isinstance(v, list) else [v])]
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


def model_inputs(wildcards):
    out = {"model": f"{RESULTS}/models/{wildcards.algo}/model.pkl"}
    if wildcards.algo == "bpz":
        out["bpz_data"] = f"{RESULTS}/bpz_data"
    return out


def train_inputs(wildcards):
    out = {"training": training_file()}
    if wildcards.algo == "bpz":
        out["bpz_data"] = f"{RESULTS}/bpz_data"
    return out


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
BPZ_DATA_PARAMS = config_hash({"zgrid": CFG["zgrid"], "bpz": CFG["algorithms"].get("bpz")})[:16]


def audit_inputs(wildcards):
    out = {
        "release": RELEASE_DIR,
        "partitions": expand(f"{RESULTS}/partition/{{batch}}.parquet", batch=BATCHES),
        "models": expand(f"{RESULTS}/models/{{algo}}/model.pkl", algo=ALGOS),
        "sidecars": expand(f"{RESULTS}/models/{{algo}}/model.json", algo=ALGOS),
    }
    if "bpz" in ALGOS:
        out["bpz_data"] = f"{RESULTS}/bpz_data"     # BPZ re-estimation reads its AB files
    return out
