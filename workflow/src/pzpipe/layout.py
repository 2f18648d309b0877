"""Chunk and batch layout, computed from input metadata alone.

A chunk is a contiguous range of at most ``chunk_rows`` rows of one input file; a
batch is ``chunks_per_batch`` consecutive chunks and is the unit of one Snakemake
job (and one output file, with a row group per chunk). Only file names and row counts
are needed (parquet footers, HDF5 shapes, or an input descriptor), so the whole DAG
is known before any data is read - or before the data exists.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from . import PipelineError
from .config import resolve_path


@dataclass(frozen=True)
class Chunk:
    index: int      # global chunk number
    file: str       # input file path
    start: int      # first row (inclusive)
    stop: int       # last row (exclusive)

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class Layout:
    files: list[tuple[str, int]]           # (path, nrows)
    chunk_rows: int
    chunks_per_batch: int

    @property
    def n_objects(self) -> int:
        return sum(n for _, n in self.files)

    @property
    def n_chunks(self) -> int:
        return sum(math.ceil(n / self.chunk_rows) for _, n in self.files)

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_chunks / self.chunks_per_batch)

    def batch_ids(self) -> list[str]:
        return [batch_id(i) for i in range(self.n_batches)]

    def chunks(self):
        idx = 0
        for path, n in self.files:
            for start in range(0, n, self.chunk_rows):
                yield Chunk(idx, path, start, min(start + self.chunk_rows, n))
                idx += 1

    def batch_chunks(self, batch: str | int) -> list[Chunk]:
        b = batch_index(batch) if isinstance(batch, str) else batch
        lo, hi = b * self.chunks_per_batch, (b + 1) * self.chunks_per_batch
        out = []
        idx = 0
        for path, n in self.files:
            nch = math.ceil(n / self.chunk_rows)
            if idx + nch <= lo:
                idx += nch
                continue
            for start in range(0, n, self.chunk_rows):
                if lo <= idx < hi:
                    out.append(Chunk(idx, path, start, min(start + self.chunk_rows, n)))
                idx += 1
                if idx >= hi:
                    return out
        return out

    def batch_files(self, batch: str | int) -> list[str]:
        seen = []
        for c in self.batch_chunks(batch):
            if c.file not in seen:
                seen.append(c.file)
        return seen


def batch_id(i: int) -> str:
    return f"b{i:06d}"


def batch_index(bid: str) -> int:
    if not (bid.startswith("b") and bid[1:].isdigit()):
        raise ValueError(f"not a batch id: {bid!r}")
    return int(bid[1:])


def file_rows(path: str, hdf5_group: str = "photometry") -> int:
    """Row count of an input file from its metadata only (parquet footer, HDF5 shape)."""
    if not os.path.exists(path):
        raise PipelineError(f"input file not found: '{path}'. Check inputs.files in the config.")
    if os.path.getsize(path) == 0:
        raise PipelineError(f"input file '{path}' is empty (0 bytes). Remove it from "
                            f"inputs.files or re-stage it.")
    suffix = Path(path).suffix.lower()
    if suffix in (".hdf5", ".h5", ".hdf"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                grp = f[hdf5_group] if hdf5_group else f
                lengths = {k: grp[k].shape[0] for k in grp.keys()
                           if hasattr(grp[k], "shape") and grp[k].shape}
        except (OSError, KeyError) as exc:
            raise PipelineError(f"cannot read HDF5 file '{path}' group '{hdf5_group}': "
                                f"{exc}. Check inputs.hdf5_group.") from exc
        if not lengths:
            raise PipelineError(f"HDF5 file '{path}' group '{hdf5_group}' has no columns")
        if len(set(lengths.values())) != 1:
            raise PipelineError(f"HDF5 file '{path}': columns have different lengths "
                                f"{lengths}; the file is corrupt")
        return next(iter(lengths.values()))
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        raise PipelineError(f"input file '{path}' is not a readable parquet file ({exc}). "
                            f"Re-stage the file or remove it from inputs.files.") from exc


def read_descriptor(desc) -> list[tuple[str, int]]:
    """Files and row counts from an input descriptor (for planning before the data exists)."""
    if isinstance(desc, dict):
        n = int(desc["n_objects"])
        m = int(desc["rows_per_file"])
        tmpl = desc.get("path_template", "objects/part_{index:06d}.parquet")
        nfiles = math.ceil(n / m)
        return [(tmpl.format(index=i), m if i < nfiles - 1 else n - m * (nfiles - 1))
                for i in range(nfiles)]
    files = []
    with open(desc, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "nrows"} <= set(reader.fieldnames):
            raise PipelineError(f"input descriptor '{desc}' must be a CSV with columns "
                                f"'path,nrows' (found {reader.fieldnames})")
        for row in reader:
            files.append((row["path"], int(row["nrows"])))
    return files


def make_layout(cfg: dict) -> Layout:
    inp = cfg["inputs"]
    if inp.get("descriptor") is not None:
        files = read_descriptor(inp["descriptor"])
    else:
        files = []
        for p in inp["files"]:
            path = resolve_path(p)
            files.append((path, file_rows(path, inp.get("hdf5_group", "photometry"))))
    empty = [p for p, n in files if n == 0]
    if empty:
        raise PipelineError(f"input file '{empty[0]}' has 0 rows. Remove it from inputs.files.")
    return Layout(files, cfg["partition"]["chunk_rows"], cfg["batch"]["chunks_per_batch"])
