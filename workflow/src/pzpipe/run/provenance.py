"""Provenance records: code version, config, package versions, checksums, host, time."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata

from pzpipe.run.config import REPO_ROOT, config_hash, resolve_path

# besides these, callers pass the RAIL package of every registered estimator and every
# package a fast path was verified on (pzpipe.algorithms.packages())
PACKAGES = ("pzpipe", "pz-rail-base", "qp-prob", "tables-io", "numpy", "scipy",
            "pandas", "pyarrow", "scikit-learn", "xgboost", "flexcode", "numba", "lsdb",
            "hats", "hats-import", "snakemake", "snakemake-executor-plugin-slurm",
            "astropy", "zstandard")


@lru_cache(maxsize=8)
def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of the pipeline's packages and of ``extra`` (the estimators' packages:
    ``pzpipe.algorithms.packages()``, passed by the stages; core imports no estimator)."""
    out = {"python": platform.python_version()}
    for p in dict.fromkeys((*PACKAGES, *extra)):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


@lru_cache(maxsize=1)
def code_version() -> dict:
    """git commit of the pipeline checkout and whether it has uncommitted changes."""
    # --no-optional-locks: `git status` would otherwise take the checkout's index.lock to
    # refresh the index, and a job killed meanwhile (SIGKILL of a run's process group, seen
    # in tests/test_resume.py) leaves the lock behind: the user's next `git commit` fails
    def git(*args):
        return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args],
                              capture_output=True,
                              text=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    from pzpipe import __version__

    return {"pzpipe": __version__, "git_commit": commit, "git_dirty": dirty}


def sha256_file(path: str, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def input_fingerprint(path: str, max_checksum_bytes: int = 1 << 30) -> dict:
    """sha256 for files up to 1 GiB; size + parquet footer statistics beyond."""
    p = resolve_path(path)
    st = os.stat(p)
    rec = {"path": path, "resolved": p, "bytes": st.st_size}
    if st.st_size <= max_checksum_bytes:
        rec["sha256"] = sha256_file(p)
    else:
        try:
            import pyarrow.parquet as pq

            md = pq.ParquetFile(p).metadata
            rec["num_rows"] = md.num_rows
            rec["num_row_groups"] = md.num_row_groups
            rec["created_by"] = md.created_by
        except Exception:  # noqa: BLE001
            rec["mtime"] = st.st_mtime
    return rec


def record(cfg: dict, inputs: list[str] = (), extra: dict | None = None,
           packages: tuple[str, ...] = ()) -> dict:
    rec = {
        "code": code_version(),
        "config_hash": config_hash(cfg),
        "config": cfg,
        "packages": package_versions(tuple(packages)),
        "inputs": [input_fingerprint(p) for p in inputs],
        "host": socket.gethostname(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        rec.update(extra)
    return rec
