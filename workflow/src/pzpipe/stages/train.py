"""Train stage: fit one RAIL algorithm on the training sample, once."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time

import joblib

from pzpipe import algorithms
from pzpipe.run import provenance
from pzpipe.core.io import atomic_dir, atomic_path, write_json_atomic
from pzpipe.stages.samples import read_sample

log = logging.getLogger(__name__)


def run(algo_name: str, cfg: dict, model_out: str, sidecar_out: str,
        training_file: str | None = None, data_dir: str | None = None) -> None:
    """Train ``algo_name`` and write the pickled model plus a JSON sidecar.

    ``training_file``: a parquet with the training sample (e.g. the training-set
    maker's split); default: config ``training.file``. ``data_dir``: the algorithm's
    prepared data directory, if it declares one (rule ``prepare_data``).
    """
    algo = algorithms.get(algo_name)
    sample = dict(cfg["training"])
    if training_file:
        sample["file"] = training_file
    data = read_sample(cfg, sample, section="training")
    n = len(data["redshift"])
    log.info("training %s on %d objects from %s", algo_name, n, sample["file"])
    inf_cls, _ = algo.classes()
    params = algorithms.stage_params(algo, cfg, "inform", data_dir)
    data = {k: v.copy() for k, v in data.items()}      # RAIL informers mutate their input
    if algo.input_transform is not None:
        data = algo.input_transform(data, params)
    seed = int(cfg["training"].get("seed", 42))
    algorithms.seed_everything(seed)
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    t0 = time.time()
    with atomic_path(model_out) as tmp:
        tmp_model = tmp + ".pkl"
        stage = inf_cls.make_stage(name=f"inform_{algo_name}", model=tmp_model,
                                   output_mode="return", **params)
        # Some informers draw from an unseeded default_rng() (seeded here); some fit
        # through MultiOutputRegressor(n_jobs=-1): with loky processes the fitted estimators
        # come back as unpickled copies and the model's pickle bytes (memo references)
        # depend on joblib's time-based batching, although the model does not. Threads
        # keep the bytes reproducible (tests/test_determinism.py) and the speed.
        # One BLAS thread: a train job is a one-core job, and informers built on BLAS
        # (a Gaussian-process optimiser) slow down ~9x when several jobs each start a BLAS
        # thread per core (measured: 26 s with one thread, 230 s with two, 10k objects on
        # the 2-core machine running other jobs).
        with algorithms.seeded_default_rng(seed), joblib.parallel_config(backend="threading"), \
                _one_blas_thread():
            stage.inform(data)
        model = stage.model
        if algo.clean_model is not None:
            model = algo.clean_model(model)
        with open(tmp, "wb") as f:
            pickle.dump(model, f)
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
        "model_sha256": provenance.sha256_file(model_out)}, packages=algorithms.packages())
    write_json_atomic(sidecar_out, side)


@contextlib.contextmanager
def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def prepare_data(algo_name: str, cfg: dict, out_dir: str) -> None:
    """Prepare the data directory ``algo_name`` declares (``Algorithm.data_dir``), once,
    before any training or estimate job (e.g. template data that the estimator would
    otherwise write on first use: parallel jobs would race to write it).

    The directory is built under a temporary name and renamed into place; leftovers of
    killed attempts are removed first."""
    from pzpipe import PipelineError

    algo = algorithms.get(algo_name)
    if algo.data_dir is None:
        raise PipelineError(f"algorithm '{algo_name}' declares no data directory: nothing "
                            f"to prepare in {out_dir}")
    with atomic_dir(out_dir.rstrip("/")) as tmp:
        algo.data_dir.prepare(cfg, str(tmp))
