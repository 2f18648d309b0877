# Helpers that turn the (validated) config into file lists. Rule files contain rules only.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from snakemake.exceptions import WorkflowError

import pzpipe
from pzpipe import PipelineError
from pzpipe.config import enabled_algorithms, resolve_path, validate_config
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


def training_file(wildcards=None):
    f = CFG["training"]["file"]
    return resolve_path(f)


def validation_file(wildcards=None):
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


# Memory (MB) per worker process and seconds per 1,000 objects per core, per algorithm;
# measured on 130k-object chunks by `make bench` (resources/throughput.yaml, docs).
EST_MEM_MB = {"bpz": 1500, "fzboost": 1500, "knn": 1500, "tpz": 1500, "dnf": 2000}
SEC_PER_KOBJ = {"bpz": 1.0, "fzboost": 1.5, "knn": 0.6, "tpz": 15.0, "dnf": 4.0}


def estimate_mem_mb(wildcards, threads, attempt):
    return int((EST_MEM_MB.get(wildcards.algo, 2000) * threads + 1000) * (1 + 0.5 * (attempt - 1)))


def estimate_runtime(wildcards, threads, attempt):
    """Minutes for one batch, with a 2x margin, growing with each retry."""
    objs = LAYOUT.chunk_rows * LAYOUT.chunks_per_batch
    minutes = SEC_PER_KOBJ.get(wildcards.algo, 10.0) * objs / 1000 / max(threads, 1) / 60
    return int(max(10, 2 * minutes) * attempt)
