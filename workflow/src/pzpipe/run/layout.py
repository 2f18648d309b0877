"""Chunk and batch layout, computed from input metadata alone.

Two kinds of input (``Layout.kind``):

* ``hats``: a HATS Object catalog (``inputs.hats``, or the catalog imported from
  ``inputs.files`` with coordinates). Its *units* are pixel files, in depth-first
  (Z-order) order; row counts come from the catalog's metadata (hatsio.pixel_counts).
  A chunk is at most ``chunk_rows`` rows of one pixel; a batch is a run of whole,
  neighbouring pixels holding about ``chunks_per_batch`` chunks (a pixel with more
  chunks makes a batch of its own). The release keeps the input's pixels: each batch
  writes the release files of its own pixels.
* ``files``: parquet/HDF5 files (``inputs.files``) without coordinates. A chunk is at
  most ``chunk_rows`` rows of one file; a batch is ``chunks_per_batch`` consecutive
  chunks and writes one release file.

Only names and row counts are needed (pixel statistics, parquet footers, HDF5 shapes, or
an input descriptor), so the whole DAG is known before any data is read - or before the
data exists (``inputs.descriptor``). Scale: the layout holds a few numbers per input
unit (300k files or 20k pixels at 40e9 objects: a few MB) and finds a batch's chunks by
binary search, never by walking the release.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pzpipe import PipelineError
from pzpipe.run.config import resolve_path


@dataclass(frozen=True)
class Chunk:
    index: int      # global chunk number
    file: str       # input file path (a pixel file for HATS inputs)
    start: int      # first row (inclusive)
    stop: int       # last row (exclusive)
    pixel: tuple[int, int] | None = None     # (order, pixel) for HATS inputs
    file_rows: int = -1                      # rows of the whole file, per the metadata

    @property
    def rows(self) -> int:
        return self.stop - self.start


class Layout:
    """Chunks and batches of an input (see the module docstring)."""

    def __init__(self, files: list[tuple[str, int]], chunk_rows: int, chunks_per_batch: int,
                 pixels: list[tuple[int, int]] | None = None, catalog: str | None = None,
                 source: str = ""):
        if pixels is not None and len(pixels) != len(files):
            raise ValueError("pixels must be parallel to files")
        self.files = list(files)
        self.chunk_rows = int(chunk_rows)
        self.chunks_per_batch = int(chunks_per_batch)
        self.pixels = None if pixels is None else [(int(k), int(p)) for k, p in pixels]
        self.catalog = catalog
        self.source = source
        rows = np.fromiter((n for _, n in self.files), dtype=np.int64, count=len(self.files))
        self._rows = rows
        nch = -(-rows // self.chunk_rows)                       # ceil
        self._file_chunk0 = np.concatenate([[0], np.cumsum(nch)]).astype(np.int64)
        n_chunks = int(self._file_chunk0[-1])
        if self.pixels is None:
            starts = list(range(0, n_chunks, self.chunks_per_batch))
        else:                                   # whole pixels, about chunks_per_batch chunks
            starts, cur = [], 0
            for i, c in enumerate(nch.tolist()):
                if c == 0:
                    continue
                if not starts or (cur > 0 and cur + c > self.chunks_per_batch):
                    starts.append(int(self._file_chunk0[i]))
                    cur = 0
                cur += c
        self._batch_chunk0 = np.array(starts + [n_chunks], dtype=np.int64)

    # -- sizes
    @property
    def kind(self) -> str:
        return "files" if self.pixels is None else "hats"

    @property
    def is_hats(self) -> bool:
        return self.pixels is not None

    @property
    def n_objects(self) -> int:
        return int(self._rows.sum())

    @property
    def n_chunks(self) -> int:
        return int(self._file_chunk0[-1])

    @property
    def n_batches(self) -> int:
        return len(self._batch_chunk0) - 1

    def batch_ids(self) -> list[str]:
        return [batch_id(i) for i in range(self.n_batches)]

    # -- chunks
    def _chunk(self, idx: int) -> Chunk:
        f = int(np.searchsorted(self._file_chunk0, idx, side="right")) - 1
        path, n = self.files[f]
        start = (idx - int(self._file_chunk0[f])) * self.chunk_rows
        return Chunk(idx, path, start, min(start + self.chunk_rows, n),
                     None if self.pixels is None else self.pixels[f], n)

    def chunks(self):
        for i in range(self.n_chunks):
            yield self._chunk(i)

    def batch_range(self, batch: str | int) -> tuple[int, int]:
        """Global chunk indices [lo, hi) of a batch."""
        b = batch_index(batch) if isinstance(batch, str) else int(batch)
        if not 0 <= b < self.n_batches:
            raise PipelineError(f"batch {batch_id(b)} is not in the current layout "
                                f"({self.n_batches} batches); the inputs changed since it was "
                                f"planned")
        return int(self._batch_chunk0[b]), int(self._batch_chunk0[b + 1])

    def batch_chunks(self, batch: str | int) -> list[Chunk]:
        lo, hi = self.batch_range(batch)
        return [self._chunk(i) for i in range(lo, hi)]

    def batch_files(self, batch: str | int) -> list[str]:
        return list(dict.fromkeys(c.file for c in self.batch_chunks(batch)))

    def batch_pixels(self, batch: str | int) -> list[tuple[int, int]]:
        """The (order, pixel) of a HATS batch's pixels, in order ([] for files inputs)."""
        if self.pixels is None:
            return []
        return list(dict.fromkeys(c.pixel for c in self.batch_chunks(batch)))

    def batch_of_chunk(self, idx: int) -> int:
        return int(np.searchsorted(self._batch_chunk0, idx, side="right")) - 1

    def describe(self) -> dict:
        return {"kind": self.kind, "catalog": self.catalog, "source": self.source,
                "n_units": len(self.files), "n_objects": self.n_objects,
                "chunk_rows": self.chunk_rows, "chunks": self.n_chunks,
                "chunks_per_batch": self.chunks_per_batch, "batches": self.n_batches}


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


# ---------------------------------------------------------------------------- descriptors
def read_descriptor(desc, catalog: str | None = None):
    """Units and row counts from an input descriptor (planning before the data exists).

    Returns ``(files, pixels)``: ``files`` = [(path, nrows)], ``pixels`` = [(order, pix)]
    parallel to it for a HATS descriptor, else None. Forms:

    * ``{n_objects: N, rows_per_file: M}``: N objects in parquet files of M rows;
    * ``{n_objects: N, rows_per_pixel: M}``: a HATS catalog of N objects in pixels of M
      rows (at the lowest order with enough pixels);
    * a CSV ``path,nrows`` (files) or ``Norder,Npix,nrows`` (a HATS catalog's pixels;
      ``pzpipe describe --hats CATALOG`` writes it).
    """
    from pzpipe.core import hatsio

    root = catalog or "objects_hats"
    if isinstance(desc, dict):
        n = int(float(desc["n_objects"]))
        if "rows_per_pixel" in desc:
            m = int(float(desc["rows_per_pixel"]))
            npix = math.ceil(n / m)
            order = 0
            while 12 * 4 ** order < npix:
                order += 1
            pix = [(order, i) for i in range(npix)]
            rows = [m if i < npix - 1 else n - m * (npix - 1) for i in range(npix)]
            return [(hatsio.pixel_file(root, k, p), r) for (k, p), r in zip(pix, rows)], pix
        m = int(float(desc["rows_per_file"]))
        tmpl = desc.get("path_template", "objects/part_{index:06d}.parquet")
        nfiles = math.ceil(n / m)
        return [(tmpl.format(index=i), m if i < nfiles - 1 else n - m * (nfiles - 1))
                for i in range(nfiles)], None
    with open(desc, newline="") as f:
        reader = csv.DictReader(f)
        names = set(reader.fieldnames or [])
        if {"Norder", "Npix", "nrows"} <= names:
            rows = [(int(r["Norder"]), int(r["Npix"]), int(r["nrows"])) for r in reader]
            rows.sort(key=lambda x: hatsio.pixel_sort_key(x[0], x[1]))
            return ([(hatsio.pixel_file(root, k, p), n) for k, p, n in rows],
                    [(k, p) for k, p, _ in rows])
        if not {"path", "nrows"} <= names:
            raise PipelineError(f"input descriptor '{desc}' must be a CSV with columns "
                                f"'path,nrows' or 'Norder,Npix,nrows' (found "
                                f"{reader.fieldnames})")
        return [(r["path"], int(r["nrows"])) for r in reader], None


def write_hats_descriptor(catalog, out) -> int:
    """``Norder,Npix,nrows`` of a HATS catalog (from its metadata) into ``out``."""
    from pzpipe.core import hatsio
    from pzpipe.core.io import atomic_path

    counts, _ = hatsio.pixel_counts(hatsio.catalog_dir(catalog))
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Norder", "Npix", "nrows"])
            w.writerows(counts)
    return len(counts)


# ---------------------------------------------------------------------------- layouts
def input_files(cfg: dict) -> list[str]:
    """``inputs.files`` expanded: paths, directories and globs ('rail:' paths resolved)."""
    from pzpipe.core.hatsio import expand_paths

    return expand_paths([resolve_path(p) for p in cfg["inputs"]["files"]], "inputs.files")


def hats_layout(catalog: str, cfg: dict, key: str = "inputs.hats") -> Layout:
    """Layout of a HATS catalog (or collection) from its metadata."""
    from pzpipe.core import hatsio

    catdir = hatsio.catalog_dir(catalog, key)
    counts, source = hatsio.pixel_counts(catdir)
    counts = [c for c in counts if c[2] > 0]
    if not counts:
        raise PipelineError(f"{key}: HATS catalog '{catalog}' has no rows")
    files = [(hatsio.pixel_file(catdir, k, p), n) for k, p, n in counts]
    return Layout(files, cfg["partition"]["chunk_rows"], cfg["batch"]["chunks_per_batch"],
                  pixels=[(k, p) for k, p, _ in counts], catalog=catdir, source=source)


def make_layout(cfg: dict, imported: str | None = None) -> Layout:
    """The layout of the configured input.

    ``imported``: the HATS catalog made from ``inputs.files`` by the import rule (when
    the files have coordinates); it must exist."""
    inp = cfg["inputs"]
    chunk_rows, cpb = cfg["partition"]["chunk_rows"], cfg["batch"]["chunks_per_batch"]
    if inp.get("descriptor") is not None:
        hats = inp.get("hats") or imported
        files, pixels = read_descriptor(inp["descriptor"], catalog=hats)
        if pixels is not None and hats:
            from pzpipe.core import hatsio

            if os.path.exists(hats):
                root = hatsio.catalog_dir(hats)
                files = [(hatsio.pixel_file(root, k, p), n) for (k, p), (_, n) in zip(pixels, files)]
        return Layout(files, chunk_rows, cpb, pixels=pixels, catalog=hats, source="descriptor")
    if inp.get("hats"):
        return hats_layout(resolve_path(inp["hats"]), cfg)
    if imported is not None:
        return hats_layout(imported, cfg, key="inputs.files (imported as HATS)")
    files = []
    for path in input_files(cfg):
        files.append((path, file_rows(path, inp.get("hdf5_group", "photometry"))))
    empty = [p for p, n in files if n == 0]
    if empty:
        raise PipelineError(f"input file '{empty[0]}' has 0 rows. Remove it from inputs.files.")
    return Layout(files, chunk_rows, cpb, source="file footers")


def import_enabled(cfg: dict) -> bool:
    """Are ``inputs.files`` imported as HATS first (``inputs.to_hats``)? ``auto``: when
    they are parquet files and ``columns.ra``/``columns.dec`` are set."""
    inp = cfg["inputs"]
    mode = inp["to_hats"]["enabled"]
    if not inp["files"] or inp.get("hats") or mode is False:
        return False
    if mode is True:
        if not (cfg["columns"]["ra"] and cfg["columns"]["dec"]):
            raise PipelineError("config error at 'inputs.to_hats.enabled': true needs "
                                "columns.ra and columns.dec (the coordinate columns)")
        return True
    hdf5 = any(str(p).lower().endswith((".hdf5", ".h5", ".hdf")) for p in inp["files"])
    return bool(cfg["columns"]["ra"] and cfg["columns"]["dec"]) and not hdf5


def catalog_columns(cfg: dict, layout: Layout) -> dict:
    """For a HATS input whose coordinate columns are not configured: take them from the
    catalog's properties (``hats_col_ra``/``hats_col_dec``). Returns a new config."""
    if not layout.is_hats or (cfg["columns"]["ra"] and cfg["columns"]["dec"]):
        return cfg
    if not layout.catalog or not os.path.isdir(layout.catalog):
        return cfg                       # planning: the catalog need not exist
    from pzpipe.core import hatsio
    from pzpipe.run.config import deep_update

    ra, dec = hatsio.coordinate_columns(layout.catalog)
    if not (ra and dec):
        raise PipelineError(f"HATS catalog '{layout.catalog}' names no coordinate columns "
                            f"(hats_col_ra/hats_col_dec in its properties): set columns.ra "
                            f"and columns.dec")
    return deep_update(cfg, {"columns": {"ra": ra, "dec": dec}})
