"""Files: reading input catalogs by row range, atomic writes of files and directories,
and the ``pzpipe`` key-value metadata of parquet files.

* :func:`atomic_path` / :func:`atomic_dir` / :func:`write_json_atomic`: every output is
  written under a temporary sibling name (``.<name>.tmp-<pid>``) and renamed into
  place, so a file or directory that exists is complete; :func:`remove_stale_tmp`
  removes the temporaries of killed attempts.
* :func:`parquet_meta`: the JSON dict a pzpipe stage stored in a parquet file's
  key-value metadata (key ``pzpipe``; the training set uses ``pzpipe_trainset``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError

HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")


def is_hdf5(path: str) -> bool:
    return Path(path).suffix.lower() in HDF5_SUFFIXES


def available_columns(path: str, hdf5_group: str = "photometry") -> list[str]:
    if is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as f:
            grp = f[hdf5_group] if hdf5_group else f
            return list(grp.keys())
    try:
        return pq.ParquetFile(path).schema_arrow.names
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"input file '{path}' is not a readable parquet file ({exc}). "
                            f"Re-stage the file or remove it from the config.") from exc


def read_rows(path: str, columns: list[str], start: int = 0, stop: int | None = None,
              hdf5_group: str = "photometry") -> dict[str, np.ndarray]:
    """Read ``columns`` for rows [start, stop) as a dict of numpy arrays.

    Parquet: only the row groups overlapping the range are read.
    """
    if is_hdf5(path):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                grp = f[hdf5_group] if hdf5_group else f
                return {c: np.asarray(grp[c][start:stop]) for c in columns}
        except OSError as exc:
            raise PipelineError(f"cannot read HDF5 file '{path}': {exc}") from exc
    try:
        pf = pq.ParquetFile(path)
        md = pf.metadata
        if stop is None:
            stop = md.num_rows
        groups, offsets, row = [], [], 0
        for i in range(md.num_row_groups):
            n = md.row_group(i).num_rows
            if row < stop and row + n > start:
                groups.append(i)
                offsets.append(row)
            row += n
        if not groups:
            table = pf.schema_arrow.empty_table().select(columns)
        else:
            table = pf.read_row_groups(groups, columns=columns)
            table = table.slice(start - offsets[0], stop - start)
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"cannot read rows {start}-{stop} of parquet file '{path}' "
                            f"({type(exc).__name__}: {exc}). The file may be truncated: "
                            f"re-stage it.") from exc
    out = {}
    for c in columns:
        col = table.column(c)
        if pa.types.is_boolean(col.type):
            import pyarrow.compute as pc

            out[c] = pc.fill_null(col, False).to_numpy(zero_copy_only=False)   # null -> False
        elif pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
            out[c] = col.to_numpy(zero_copy_only=False)
        elif pa.types.is_nested(col.type):
            raise PipelineError(f"parquet file '{path}': column '{c}' has nested type "
                                f"{col.type}; expected one number (or id) per row. Check the "
                                f"'columns' section of the config.")
        else:
            out[c] = np.asarray(col.to_pylist(), dtype=object)
    return out


def tmp_name(path: str | os.PathLike) -> str:
    p = Path(path)
    return str(p.with_name(f".{p.name}.tmp-{os.getpid()}"))


# errors of the output location itself (disk full, quota, permissions, read-only):
# reported as "cannot write <path>"; other OSErrors inside the block (an unreadable
# input, ...) propagate unchanged with their own file name
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it into place on success.

    On any exception the temporary file is removed, so no partial output is left
    under the final name.
    """
    tmp = tmp_name(path)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(path)
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if (isinstance(exc, OSError) and not isinstance(exc, PipelineError)
                and exc.errno in _WRITE_ERRNOS):
            raise PipelineError(
                f"cannot write '{path}': {exc.strerror or exc}. Free disk space or fix the "
                f"permissions of '{Path(path).parent}', then rerun (no partial file was "
                f"left).") from exc
        raise


def remove_stale_tmp(path) -> list[str]:
    """Remove temporaries of ``path`` left by a killed job (``.<name>.tmp-<pid>``, files or
    directories). Snakemake never runs two jobs for the same output at once, so any such
    entry is an orphan of an interrupted attempt (SIGKILL skips the cleanup above)."""
    import glob
    import shutil

    p = Path(path)
    removed = []
    for stale in glob.glob(os.path.join(glob.escape(str(p.parent)), glob.escape(f".{p.name}.tmp-") + "*")):
        if os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
        removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, create: bool = True):
    """Yield a temporary sibling directory (a :class:`~pathlib.Path`, created unless
    ``create`` is False) to build ``path`` in; on success replace ``path`` with it, on any
    exception remove it (no partial directory under the final name). Temporaries of
    killed attempts are removed first."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    tmp = Path(tmp_name(out))
    if create:
        tmp.mkdir()
    try:
        yield tmp
        if out.is_dir() and not out.is_symlink():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        import shutil

        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise


def parquet_meta(source, key: str = "pzpipe", *, required: bool = False) -> dict:
    """The JSON dict stored under ``key`` in parquet key-value metadata.

    ``source``: a parquet file path, a ``pyarrow.parquet.ParquetFile``, a
    ``pyarrow.Schema`` or a metadata mapping (bytes or str keys). ``{}`` when the key is
    absent (a PipelineError naming the file when ``required``); a value that is not
    JSON is a ValueError.
    """
    import json

    if isinstance(source, (str, os.PathLike)):
        # the footer's key-value metadata: the schema's keys and those a ParquetWriter
        # added at close (add_key_value_metadata), which the Arrow schema lacks
        md = pq.ParquetFile(source).metadata.metadata
    elif isinstance(source, pq.ParquetFile):
        md = source.metadata.metadata
    elif isinstance(source, pa.Schema):
        md = source.metadata
    else:
        md = source
    md = md or {}
    raw = md.get(key.encode(), md.get(key))
    if raw is None:
        if required:
            raise PipelineError(f"'{source}' has no {key} metadata: not written by this "
                                f"pipeline")
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        out = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the '{key}' metadata is not valid JSON ({exc})") from None
    return out if isinstance(out, dict) else {}


def write_json_atomic(path, obj, *, indent: int = 2, sort_keys: bool = True,
                      default=str) -> None:
    import json

    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys, default=default)
            f.write("\n")
