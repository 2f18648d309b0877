"""Test inputs: a Rubin-like Object table from the DC2 sample, its parquet file and a
pipeline config for it; a copy of the clone (for install tests)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from .runs import REPO


def make_flux_table(n, seed=0, start_id=1):
    """A Rubin-like Object table (fluxes in nJy) built from the DC2 sample."""
    import tables_io
    from rail.utils.path_utils import find_rail_file

    d = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_validation_9816.hdf5"))["photometry"]
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(d["id"]), n, replace=False)
    out = {"objectId": np.arange(start_id, start_id + n, dtype=np.int64),
           "ra": rng.uniform(50, 60, n), "dec": rng.uniform(-40, -30, n),
           "detect_isPrimary": np.ones(n, dtype=bool), "redshift": d["redshift"][idx]}
    for b in "ugrizy":
        m = d[f"mag_{b}_lsst"][idx].astype(np.float64)
        e = d[f"mag_err_{b}_lsst"][idx].astype(np.float64)
        det = m != 99.0
        f = np.where(det, 10 ** (-0.4 * (m - 31.4)), -5.0)
        fe = np.where(det, f * e * np.log(10) / 2.5, 10 ** (-0.4 * (e - 31.4)))
        out[f"{b}_gaap1p0Flux"] = f
        out[f"{b}_gaap1p0FluxErr"] = fe
    return out


def write_parquet(path, cols, row_group_size=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
    return str(path)


def flux_config(files, **over):
    from pzpipe.run.config import deep_update, validate_config

    base = {
        "release": "test",
        "inputs": {"files": [str(f) for f in files], "photometry": "flux"},
        "columns": {"id": "objectId", "ra": "ra", "dec": "dec"},
        "training": {"file": "rail:examples_data/testdata/test_dc2_training_9816.hdf5",
                     "max_rows": 1500},
        "validation": {"file": "rail:examples_data/testdata/test_dc2_validation_9816.hdf5",
                       "max_rows": 1000},
    }
    return validate_config(deep_update(base, over))


def copy_clone(dst: Path) -> Path:
    """The repository's tracked and new (not ignored) files, symlinks kept: what a
    clone holds, without the local .venv/results/build directories."""
    import shutil

    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if not os.path.lexists(src):
            continue                       # deleted in the work tree
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        else:
            shutil.copy2(src, out)
    return dst
