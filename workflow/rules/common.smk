# Helpers that turn the (validated) config into file lists. Rule files contain rules only.
# Every path of the workflow is defined here, once (PATHS), and passed to the functions.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from snakemake.exceptions import WorkflowError

import pzpipe
from pzpipe import PipelineError
from pzpipe import algorithms, trainset
from pzpipe.stages import (
    audit,
    collection,
    estimate,
    export,
    partition,
    progress,
    train,
    validate,
)
from pzpipe.core.jobs import logged
from pzpipe.run.config import config_hash, enabled_algorithms, resolve_path, validate_config
from pzpipe.run.layout import catalog_columns, import_enabled, make_layout
from pzpipe.stages.partition import check_catalog_columns

try:
    CFG = validate_config(config)
except PipelineError as _exc:
    raise WorkflowError(f"pzpipe: {_exc}")

ALGOS = enabled_algorithms(CFG)
RESULTS = "results"
PATHS = {
    "objects_hats": f"{RESULTS}/objects_hats",  # inputs.files imported as HATS
    "partition": f"{RESULTS}/partition/{{batch}}.parquet",
    "model": f"{RESULTS}/models/{{algo}}/model.pkl",
    "sidecar": f"{RESULTS}/models/{{algo}}/model.json",
    "algo_data": f"{RESULTS}/{{algo}}_data",  # rule prepare_data (Algorithm.data_dir)
    "estimate": f"{RESULTS}/estimates/{{algo}}/{{batch}}.parquet",
    "export_batch": f"{RESULTS}/export/batches/{{batch}}",
    "export_ids": f"{RESULTS}/export/ids/{{batch}}.parquet",
    "export_dedup": f"{RESULTS}/export/dedup/{{bucket}}.json",
    "export_catalog": f"{RESULTS}/export/catalog",  # the photo-z catalog, before the release
    "export_margin": f"{RESULTS}/export/margin/{{batch}}",  # margin files of a batch's pixels
    "export_index_batch": f"{RESULTS}/export/index/{{batch}}.parquet",  # a batch's sorted ids
    "export_index": f"{RESULTS}/export/index_buckets/{{bucket}}",  # one id range of the index
    "release": f"{RESULTS}/release",
    "audit_md": f"{RESULTS}/audit/report.md",
    "audit_json": f"{RESULTS}/audit/report.json",
    "validation_estimate": f"{RESULTS}/validation/estimates/{{algo}}.parquet",
    "trainset": f"{RESULTS}/trainset",  # the training-set maker's outputs (rules/trainset.smk)
}
# the training-set maker's files (docs/trainset.md), all under PATHS["trainset"]
PATHS.update(
    {
        f"trainset_{k}": f"{PATHS['trainset']}/{v}"
        for k, v in {
            "compiled": "specz_compiled.parquet",
            "compiled_report": "specz_compiled.json",
            "dedup": "specz_dedup.parquet",
            "dedup_report": "specz_dedup.json",
            "photometry_hats": "photometry_hats",
            "matched": "matched.parquet",
            "matched_report": "matched.json",
            "train": "train.parquet",
            "test": "test.parquet",
            "train_hats": "train_hats",
            "test_hats": "test_hats",
            "summary": "summary.json",
            "plot": "split.png",
            "provenance": "provenance.json",
        }.items()
    }
)
RELEASE_DIR = PATHS["release"]
VALIDATION = validate.output_paths(RESULTS, ALGOS)  # rule validate's outputs by name
VALIDATION_OUTPUTS = [p for v in VALIDATION.values() for p in (v if isinstance(v, list) else [v])]
PLANNING = CFG["inputs"]["descriptor"] is not None
# inputs.files with coordinates are imported as HATS first (checkpoint import_objects);
# the layout then comes from the imported catalog's metadata.
TO_HATS = import_enabled(CFG) and not PLANNING
_LAYOUT = []


def current_layout():
    """The layout (cached). In input functions use ``layout()``, which first waits for the
    import checkpoint; in ``run:`` blocks the import exists already."""
    global CFG
    if not _LAYOUT:
        try:
            lay = make_layout(CFG, imported=PATHS["objects_hats"] if TO_HATS else None)
            CFG = catalog_columns(CFG, lay)  # HATS inputs: coordinate names from the catalog
            check_catalog_columns(lay, CFG)
        except PipelineError as exc:
            raise WorkflowError(f"pzpipe: {exc}")
        _LAYOUT.append(lay)
    return _LAYOUT[0]


def layout(wildcards=None):
    if TO_HATS:
        checkpoints.import_objects.get()
    return current_layout()


if not TO_HATS:
    current_layout()  # errors in the inputs stop the run at start-up


wildcard_constraints:
    batch=r"b\d{6}",
    bucket=r"\d+",
    algo="|".join(ALGOS) if ALGOS else "none",


def batch_ids(wildcards=None):
    return layout().batch_ids()


def input_files():
    from pzpipe.run.layout import input_files as _files

    try:
        return _files(CFG)
    except PipelineError as exc:
        raise WorkflowError(f"pzpipe: {exc}")


def batch_inputs(wildcards):
    """Input files of one batch (none in planning mode: the data may not exist yet)."""
    if PLANNING:
        return []
    if TO_HATS:
        return [PATHS["objects_hats"]]
    return layout().batch_files(wildcards.batch)


TRAINSET_ON = CFG["trainset"].get("enabled", False)


def training_file(wildcards=None):
    """The training sample: the training-set maker's train split when it is enabled."""
    if TRAINSET_ON:
        return PATHS["trainset_train"]
    return resolve_path(CFG["training"]["file"])


def validation_file(wildcards=None):
    """The held-out sample: the training-set maker's test split when it is enabled."""
    if TRAINSET_ON:
        return PATHS["trainset_test"]
    return resolve_path(CFG["validation"]["file"])


def data_dir_inputs(algo):
    """The prepared data directory of ``algo``, if it declares one (rule prepare_data)."""
    if algorithms.get(algo).data_dir is None:
        return {}
    return {"algo_data": PATHS["algo_data"].format(algo=algo)}


def model_inputs(wildcards):
    return {"model": PATHS["model"].format(algo=wildcards.algo), **data_dir_inputs(wildcards.algo)}


def train_inputs(wildcards):
    return {"training": training_file(), **data_dir_inputs(wildcards.algo)}


def export_batch_inputs(wildcards):
    return {
        "partition": PATHS["partition"].format(batch=wildcards.batch),
        **{f"est_{a}": PATHS["estimate"].format(algo=a, batch=wildcards.batch) for a in ALGOS},
    }


def n_buckets():
    return export.n_buckets(current_layout().n_objects, CFG["export"]["dedup_ids_per_job"])


def export_inputs(wildcards):
    lay = layout()
    k = export.n_buckets(lay.n_objects, CFG["export"]["dedup_ids_per_job"])
    out = {
        "batches": expand(PATHS["export_batch"], batch=lay.batch_ids()),
        "dedup": expand(PATHS["export_dedup"], bucket=range(k)),
        "sidecars": expand(PATHS["sidecar"], algo=ALGOS),
    }
    # the export refuses estimators that fail a gating requirement set
    if CFG["validate"]["release_gate"]:
        out["requirements"] = VALIDATION["req_json"]
    return out


def dedup_inputs(wildcards):
    return expand(PATHS["export_ids"], batch=layout().batch_ids())


def collection_on():
    """The release is a HATS collection (margin + id index) when the input is HATS."""
    return current_layout().is_hats


def n_index_buckets():
    return export.n_buckets(current_layout().n_objects, CFG["export"]["dedup_ids_per_job"])


def index_bucket_inputs(wildcards):
    return expand(PATHS["export_index_batch"], batch=layout().batch_ids())


def input_catalog():
    """The HATS input catalog (inputs.hats, or inputs.files imported), else None."""
    if CFG["inputs"]["hats"]:
        return resolve_path(CFG["inputs"]["hats"])
    return PATHS["objects_hats"] if TO_HATS else None


def release_inputs(wildcards):
    lay = layout()
    hats = lay.is_hats
    out = {
        "catalog": PATHS["export_catalog"],
        "margins": expand(PATHS["export_margin"], batch=lay.batch_ids()) if hats else [],
        "indexes": expand(PATHS["export_index"], bucket=range(n_index_buckets())) if hats else [],
        "sidecars": expand(PATHS["sidecar"], algo=ALGOS),
        "models": expand(PATHS["model"], algo=ALGOS),
        "validation": [VALIDATION[k] for k in ("md", "csv", "req_md", "req_json")],
    }
    data_algos = algorithms.with_data_dir(ALGOS)
    if data_algos:
        out["algo_data"] = expand(PATHS["algo_data"], algo=data_algos)
    return out


# Job sizes (mem_mb, runtime; partition of estimate_batch): one table, pzpipe.planning.resources.JOBS,
# and the measured throughput for estimate_batch
from pzpipe.planning.resources import rule_resources


def config_params(*sections, algo=False):
    """A short hash of the config sections a rule depends on, declared as a rule param
    so that Snakemake reruns the rule (and only it and its dependants) when they change."""
    if not algo:
        return config_hash(CFG, list(sections))[:16]
    return lambda wc: config_hash(
        {**{s: CFG.get(s) for s in sections}, "algo": CFG["algorithms"][wc.algo]}
    )[:16]


PARTITION_KEYS = ("inputs", "columns", "bands", "ref_band", "partition")


def audit_inputs(wildcards):
    """What the audit reads (pzpipe.stages.audit.Inputs names the same PATHS)."""
    out = {
        "release": PATHS["release"],
        "partitions": expand(PATHS["partition"], batch=batch_ids()),
        "models": expand(PATHS["model"], algo=ALGOS),
        "sidecars": expand(PATHS["sidecar"], algo=ALGOS),
        "estimates": expand(PATHS["estimate"], algo=ALGOS, batch=batch_ids()),
    }
    if TO_HATS:
        out["objects_hats"] = PATHS["objects_hats"]  # the layout's source
    data_algos = algorithms.with_data_dir(ALGOS)
    if data_algos:  # re-estimation reads them
        out["algo_data"] = expand(PATHS["algo_data"], algo=data_algos)
    return out
