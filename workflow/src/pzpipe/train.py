"""Train stage: fit one RAIL algorithm on the training sample, once."""

from __future__ import annotations

import logging
import os
import pickle
import time

import joblib

from . import algorithms, provenance
from .io import atomic_path, write_json_atomic
from .samples import read_sample

log = logging.getLogger(__name__)


def run(algo_name: str, cfg: dict, model_out: str, sidecar_out: str, training_file: str | None = None) -> None:
    """Train ``algo_name`` and write the pickled model plus a JSON sidecar.

    ``training_file``: a parquet with the training sample (e.g. the training-set
    maker's split); default: config ``training.file``.
    """
    algo = algorithms.get(algo_name)
    sample = dict(cfg["training"])
    if training_file:
        sample["file"] = training_file
    data = read_sample(cfg, sample, section="training")
    n = len(data["redshift"])
    log.info("training %s on %d objects from %s", algo_name, n, sample["file"])
    inf_cls, _ = algo.classes()
    params = algorithms.stage_params(algo, cfg, "inform")
    seed = int(cfg["training"].get("seed", 42))
    algorithms.seed_everything(seed)
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    t0 = time.time()
    with atomic_path(model_out) as tmp:
        tmp_model = tmp + ".pkl"
        stage = inf_cls.make_stage(name=f"inform_{algo_name}", model=tmp_model,
                                   output_mode="return", **params)
        # TPZ draws from unseeded default_rng(); FlexCode fits its XGBoost regressors
        # through MultiOutputRegressor(n_jobs=-1): with loky processes the fitted estimators
        # come back as unpickled copies and the model's pickle bytes (memo references)
        # depend on joblib's time-based batching, although the model does not. Threads
        # keep the bytes reproducible (tests/test_determinism.py) and the speed.
        with algorithms.seeded_default_rng(seed), joblib.parallel_config(backend="threading"):
            stage.inform({k: v.copy() for k, v in data.items()})
        with open(tmp, "wb") as f:
            pickle.dump(stage.model, f)
        for leftover in (tmp_model, os.path.join(os.path.dirname(tmp_model),
                                                  "inprogress_" + os.path.basename(tmp_model))):
            if os.path.exists(leftover):
                os.remove(leftover)
    elapsed = time.time() - t0
    log.info("trained %s in %.1f s", algo_name, elapsed)
    side = provenance.record(cfg, inputs=[sample["file"]], extra={
        "algorithm": algo_name, "rail_informer": f"{algo.module}.{algo.informer}",
        "inform_params": params, "training_file": sample["file"], "training_rows": n,
        "seed": seed, "train_seconds": round(elapsed, 2),
        "model_sha256": provenance.sha256_file(model_out)})
    write_json_atomic(sidecar_out, side)


def prepare_bpz_data(cfg: dict, out_dir: str) -> None:
    """Copy BPZ's template data to a writable ``out_dir`` and generate its AB files once.

    RAIL's BPZ writes ~48 "AB" flux tables into its data directory on first use
    (by default inside site-packages). Doing it here, in one job before any estimate
    job, avoids parallel jobs racing to write the same files.
    """
    import shutil

    from rail.utils.path_utils import find_rail_file

    src = find_rail_file("examples_data/estimation_data/data")
    import glob

    for stale in glob.glob(glob.escape(out_dir.rstrip("/")) + ".tmp-*"):   # killed attempts
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.rstrip("/") + f".tmp-{os.getpid()}"
    try:
        shutil.copytree(src, tmp)
        algo = algorithms.get("bpz")
        _, est_cls = algo.classes()
        params = algorithms.stage_params(algo, cfg, "estimate")
        params["bpz_ref_data_path"] = os.path.abspath(tmp)
        stage = est_cls.make_stage(name="bpz_prepare", output_mode="return", **params)
        stage._load_templates()      # generates the missing AB files
        n_ab = len([f for f in os.listdir(os.path.join(tmp, "AB")) if f.endswith(".AB")])
        log.info("BPZ data in %s: %d AB files", out_dir, n_ab)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
