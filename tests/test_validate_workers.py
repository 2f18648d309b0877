"""Validation estimates do not depend on ``estimate.workers``.

The validation sample is cut into ``validate.chunk_rows``-row chunks whatever the worker
count (DNF couples the objects of a chunk; TPZ and CMNN are seeded per chunk), so one and
two worker processes give byte-identical validation estimate files, for every estimator
of the default run (``pzpipe.algorithms.default_names()``, real RAIL models trained on a
small sample; LePhare with the reduced library of config/test.yaml: RAIL's default one
takes ~19 CPU-minutes to build).
"""
import pyarrow.parquet as pq
import pytest
import yaml

from pzpipe import algorithms
from pzpipe.run.config import REPO_ROOT, deep_update, load_config
from pzpipe.stages import train, validate

ALGOS = algorithms.default_names()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("workers")
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    test_cfg = yaml.safe_load((REPO_ROOT / "config" / "test.yaml").read_text())
    cfg = deep_update(cfg, {"algorithms": {"lephare": test_cfg["algorithms"]["lephare"]}})
    cfg = deep_update(cfg, {
        "training": {"max_rows": 1000},
        "validation": {"max_rows": 250},
        "validate": {"chunk_rows": 90},          # 3 chunks: both workers get work
        "algorithms": {"tpz": {"inform": {"n_random": 1, "n_trees": 2}},
                       "fzboost": {"inform": {"nbump": 5, "nsharp": 5}}}})
    models, data_dirs = {}, {}
    for a in ALGOS:
        if algorithms.get(a).data_dir is not None:
            data_dirs[a] = str(d / f"{a}_data")
            train.prepare_data(a, cfg, data_dirs[a])
        models[a] = str(d / f"{a}.pkl")
        train.run(a, cfg, models[a], str(d / f"{a}.json"), data_dir=data_dirs.get(a))
    return cfg, models, data_dirs, d


@pytest.mark.parametrize("algo", ALGOS)
def test_validation_estimates_do_not_depend_on_workers(trained, algo):
    cfg, models, data_dirs, d = trained
    files = []
    for workers in (1, 2):
        out = str(d / f"{algo}_val_w{workers}.parquet")
        validate.estimate_validation(algo, models[algo], cfg, out, workers=workers,
                                     data_dir=data_dirs.get(algo))
        files.append(out)
    t = pq.read_table(files[0])
    assert t.num_rows == 250 and "pdf_full" in t.column_names
    one, two = (open(f, "rb").read() for f in files)
    assert one == two, (f"{algo}: validation estimates differ between 1 and 2 workers "
                        f"({validate.__name__}.estimate_validation, validate.chunk_rows)")
