"""The release as a HATS collection: the margin catalog and the id index, in jobs that scale.

Rubin serves its catalogs for lsdb as HATS *collections*: a catalog plus a margin catalog
(the rows within a few arcseconds outside each pixel, so that crossmatches find neighbours
across pixel edges) and index catalogs (``id_search`` by ``objectId`` reads one small
file instead of every pixel). The photo-z release is written the same way:

    results/release/
      collection.properties        primary catalog, default margin, default index
      photoz/                      the photo-z catalog (``pzpipe.stages.export``)
      photoz_margin/               margin catalog, ``export.margin_arcsec``
      photoz_<id>_index/           index catalog on the id column (``dataset/index/part.K.parquet``)

hats-import's own pipelines build both from a finished catalog, but each in one dask
computation over the whole catalog: the margin pipeline plans from a table of every
(pixel, margin pixel) pair of the catalog (20k pixels x ~1,000 margin pixels at release
scale, read again by every map task), and the index pipeline is a global dask
``set_index`` (and refuses to run on Python 3.11 with the dask that lsdb 0.11 installs:
``IndexArguments.check_versions``). Here the same files are written by Snakemake jobs
whose memory is bounded by one batch:

* :func:`run_margin_batch` (one job per export batch): the margin files of the batch's
  pixels and of the empty sky pixels (hats' negative tree) that follow them in depth-first
  order. A pixel's margin is, exactly as hats-import's ``margin_cache`` selects it (no fine
  filtering), every row of a neighbouring pixel whose order-``margin_order`` HEALPix pixel
  is in ``hats.pixel_math.get_margin`` of the pixel; ``margin_order`` is
  ``healpix_shim.margin2order(margin_arcsec)``. The job reads the ``_healpix_29`` column
  of each neighbouring pixel file, then the selected rows. tests/test_collection.py
  compares the result with hats-import's ``generate_margin_cache`` row for row.
* :func:`run_index_batch` (one job per export batch): the batch's ids with their pixel
  (``Norder``, ``Npix``: hats-import's index columns), sorted by id, plus an evenly spaced
  sample of the sorted ids in the file's metadata.
* :func:`run_index_bucket` (one job per id range): the id range is the bucket's share of
  the pooled samples of every batch file (the same ranges in every job); the job reads that
  range from every batch file (row-group statistics skip the rest), sorts it and writes
  ``dataset/index/part.K.parquet`` with row groups of ``INDEX_ROW_GROUP`` ids, so that a
  lookup reads one row group.
* :func:`write_margin_metadata`, :func:`write_index_metadata`,
  :func:`write_collection_properties`: the catalog-level files, with the hats library's
  writers, called by the release job (one entry per pixel or bucket).

Memory at 40e9 objects (~20k pixels of ~2M rows, ~400 batches of ~1e8 objects): a margin
job holds one neighbouring pixel's ``_healpix_29`` column (16 MB at 2M rows), one row group
of it (one chunk, <= 130k rows) and the margin rows of the pixels in flight (a pixel's file
is written as soon as its last neighbour is read; sources go in depth-first order, so
that is a ring of pixels around the current one, ~10 pixels' margins, not the batch's); an index batch job 17 B per object
of the batch (1.4 GB at 8e7); an index bucket job 17 B per id of its range (2.6 GB at the
default ``export.dedup_ids_per_job`` = 1.5e8 ids) plus the sort; the release job one entry
per file. docs/scaling.md has the figures.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError
from pzpipe.core import hatsio
from pzpipe.core.io import atomic_dir, atomic_path, write_json_atomic
from pzpipe.run import provenance

log = logging.getLogger(__name__)

REPORT = "report.json"
PRIMARY = "photoz"
MARGIN = "photoz_margin"
INDEX_ROW_GROUP = 100_000          # ids per row group of the index (a lookup reads one)
INDEX_SAMPLE = 1024                # sampled ids per batch file (bucket boundaries)
ORDER_T = pa.uint8()               # hats-import's index columns: Norder uint8, Npix uint64
NPIX_T = pa.uint64()


def index_name(id_column: str) -> str:
    return f"{PRIMARY}_{id_column}_index"


def margin_order(margin_arcsec: float, highest_order: int) -> int:
    """hats-import's choice: the lowest order whose pixels are at least ``margin_arcsec``
    wide, and above the catalog's highest order."""
    import hats.pixel_math.healpix_shim as hp

    m = int(hp.margin2order(margin_thr_arcmin=float(margin_arcsec) / 60.0))
    if m < highest_order + 1:
        raise PipelineError(f"export.margin_arcsec = {margin_arcsec}: margin order {m} is not "
                            f"above the catalog's highest pixel order {highest_order}; use a "
                            f"smaller margin")
    return m


# ---------------------------------------------------------------------------- pixels
def read_file_list(catalog_root, files_csv: str = "manifest_files.csv") -> list[dict]:
    """The export's list of the catalog's data files (path, rows, bytes, sha256, batch)."""
    with open(Path(catalog_root) / files_csv, newline="") as f:
        return list(csv.DictReader(f))


def _pixel_of(path: str) -> tuple[int, int]:
    from hats.io import paths

    px = paths.get_healpix_from_path(path)
    return int(px.order), int(px.pixel)


class _Lookup:
    """Which catalog pixel holds each order-M pixel (-1: none), by binary search over the
    pixels' depth-first ranges (one entry per catalog pixel)."""

    def __init__(self, pixels: list[tuple[int, int]], m: int):
        self.pixels = pixels
        s = np.array([p << (2 * (m - k)) for k, p in pixels], dtype=np.int64)
        e = np.array([(p + 1) << (2 * (m - k)) for k, p in pixels], dtype=np.int64)
        o = np.argsort(s, kind="stable")
        self.s, self.e, self.o = s[o], e[o], o

    def __call__(self, mpix: np.ndarray) -> np.ndarray:
        if len(self.s) == 0:
            return np.full(len(mpix), -1)
        i = np.searchsorted(self.s, mpix, side="right") - 1
        j = np.clip(i, 0, None)
        return np.where((i >= 0) & (mpix < self.e[j]), self.o[j], -1)


def negative_tree(pixels: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The fewest pixels that cover the sky outside ``pixels`` (hats'
    ``compute_negative_tree_pixels``, which aligns pixel trees with numba code compiled
    anew in every process: 30 s per job here). Recursive split of the 12 order-0 pixels:
    a pixel that contains no catalog pixel is kept, one that is a catalog pixel dropped,
    the others split in four."""
    top = hatsio.HEALPIX_ORDER
    rng = sorted(((p << 2 * (top - k)), ((p + 1) << 2 * (top - k))) for k, p in pixels)
    starts = np.array([a for a, _ in rng], dtype=np.int64)
    ends = np.array([b for _, b in rng], dtype=np.int64)
    have = set(pixels)
    out = []
    stack = [(0, p) for p in range(11, -1, -1)]
    while stack:
        k, p = stack.pop()
        if (k, p) in have:
            continue
        a, b = p << 2 * (top - k), (p + 1) << 2 * (top - k)
        i = int(np.searchsorted(ends, a, side="right"))      # first catalog range ending after a
        if i >= len(starts) or starts[i] >= b:
            out.append((k, p))                                 # no catalog pixel inside
        else:
            stack.extend((k + 1, 4 * p + j) for j in range(3, -1, -1))
    return out


def destination_pixels(pixels_by_batch: dict[str, list[tuple[int, int]]], batch: str
                       ) -> list[tuple[int, int]]:
    """The pixels whose margin the job of ``batch`` writes: the batch's catalog pixels and
    the empty-sky pixels (hats' negative tree of the whole catalog) whose depth-first key
    falls after the batch's first pixel and before the next batch's (the first batch also
    takes those before every pixel). Every pixel of the sky tree is in exactly one job."""
    allpix = sorted({px for pxs in pixels_by_batch.values() for px in pxs},
                    key=lambda x: hatsio.pixel_sort_key(*x))
    own = sorted(pixels_by_batch.get(batch, []), key=lambda x: hatsio.pixel_sort_key(*x))
    if not allpix:
        return []
    neg = negative_tree(allpix)
    owner = {px: b for b, pxs in pixels_by_batch.items() for px in pxs}
    keys = np.array([hatsio.pixel_sort_key(*px) for px in allpix], dtype=np.int64)
    out = list(own)
    for px in neg:
        i = int(np.searchsorted(keys, hatsio.pixel_sort_key(*px), side="right")) - 1
        if owner[allpix[max(i, 0)]] == batch:
            out.append(px)
    return out


# ---------------------------------------------------------------------------- margin
def run_margin_batch(catalog_root: str, batch: str, margin_arcsec: float, out_dir: str,
                     files_csv: str = "manifest_files.csv") -> dict:
    """The margin files of the batch's pixels (see the module docstring) into
    ``out_dir/dataset/...`` plus ``out_dir/report.json`` (rows, bytes, sha256 per file)."""
    from hats.pixel_math import get_margin
    from hats.pixel_math.spatial_index import spatial_index_to_healpix

    root = Path(catalog_root)
    files = read_file_list(root, files_csv)
    by_batch: dict[str, list[tuple[int, int]]] = {}
    path_of = {}
    for f in files:
        px = _pixel_of(f["path"])
        by_batch.setdefault(f["batch"], []).append(px)
        path_of[px] = root / f["path"]
    pixels = sorted(path_of, key=lambda x: hatsio.pixel_sort_key(*x))
    highest = max((k for k, _ in pixels), default=0)
    m_order = margin_order(margin_arcsec, highest)
    dest = destination_pixels(by_batch, batch)
    look = _Lookup(pixels, m_order)
    need: dict[int, list[tuple[tuple[int, int], np.ndarray]]] = {}
    for k, p in dest:
        mp = np.asarray(get_margin(k, p, m_order - k), dtype=np.int64)
        src = look(mp)
        for si in np.unique(src[src >= 0]):
            need.setdefault(int(si), []).append(((k, p), np.sort(mp[src == si])))
    schema = pq.read_schema(root / "dataset" / "_common_metadata")
    # sources in depth-first order; a destination's file is written (and its rows freed)
    # as soon as its last source is read: the rows in memory are those of the
    # destinations in flight, a ring around the current position, not the whole batch
    left = {}
    for si in need:
        for px, _ in need[si]:
            left[px] = left.get(px, 0) + 1
    parts: dict[tuple[int, int], list[pa.Table]] = {}
    out = Path(out_dir)
    written = []
    from pzpipe.release import pdfstore

    with atomic_dir(out) as tmp:
        def flush(px):
            got = parts.pop(px, None)
            if not got:
                return
            t = pa.concat_tables(got).sort_by(hatsio.HEALPIX_COL)
            rel = os.path.relpath(hatsio.pixel_file("", *px), "")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, tmp / rel, **pdfstore.PARQUET_KWARGS)
            written.append({"path": rel, "rows": t.num_rows, "row_groups": 1,
                            "bytes": (tmp / rel).stat().st_size,
                            "sha256": provenance.sha256_file(str(tmp / rel)), "pixel": list(px)})

        for si in sorted(need):
            f = path_of[pixels[si]]
            pf = pq.ParquetFile(f)
            hpx = pf.read(columns=[hatsio.HEALPIX_COL]).column(0).to_numpy()
            rowm = spatial_index_to_healpix(hpx, target_order=m_order)
            starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows
                                      for i in range(pf.metadata.num_row_groups)])
            sel = {px: np.nonzero(np.isin(rowm, mset))[0] for px, mset in need[si]}
            del hpx, rowm
            # only the row groups holding selected rows, one at a time
            for g in range(pf.metadata.num_row_groups):
                lo, hi = starts[g], starts[g + 1]
                group = None
                for px, idx in sel.items():
                    local = idx[(idx >= lo) & (idx < hi)] - lo
                    if len(local):
                        if group is None:
                            group = pf.read_row_group(g).cast(schema)
                        parts.setdefault(px, []).append(group.take(local))
                del group
            for px, _ in need[si]:
                left[px] -= 1
                if left[px] == 0:
                    flush(px)
        written.sort(key=lambda w: hatsio.pixel_sort_key(*w["pixel"]))
        report = {"batch": batch, "margin_arcsec": float(margin_arcsec),
                  "margin_order": m_order, "destination_pixels": len(dest),
                  "source_pixels": len(need), "files": written,
                  "rows": sum(w["rows"] for w in written)}
        write_json_atomic(tmp / REPORT, report)
    log.info("margin %s: %d rows in %d file(s) for %d pixel(s)", batch, report["rows"],
             len(written), len(dest))
    return report


def write_margin_metadata(root, pixels: list[tuple[int, int]], schema, *, total_rows: int,
                          ra_column: str, dec_column: str, margin_arcsec: float,
                          primary: str = PRIMARY, name: str = MARGIN) -> None:
    """partition_info.csv, dataset/_common_metadata and properties of the margin catalog
    (hats' writers; catalog_type margin, primary catalog named relative to the
    collection)."""
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math.healpix_pixel import HealpixPixel

    root = Path(root)
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    PartitionInfo.from_healpix([HealpixPixel(k, p) for k, p in pixels]).write_to_file(
        root / "partition_info.csv")
    pq.write_metadata(schema, root / "dataset" / "_common_metadata")
    TableProperties(catalog_name=name, catalog_type="margin", total_rows=int(total_rows),
                    ra_column=ra_column, dec_column=dec_column,
                    healpix_column=hatsio.HEALPIX_COL, healpix_order=hatsio.HEALPIX_ORDER,
                    primary_catalog=f"../{primary}", margin_threshold=float(margin_arcsec),
                    hats_order=max((k for k, _ in pixels), default=0),
                    hats_builder="pzpipe (margin rows as hats-import margin_cache selects them)"
                    ).to_properties_file(root)


# ---------------------------------------------------------------------------- index
def _index_schema(id_column: str) -> pa.Schema:
    return pa.schema([pa.field(id_column, pa.int64()), pa.field("Norder", ORDER_T),
                      pa.field("Npix", NPIX_T)])


def run_index_batch(batch_dir: str, id_column: str, out: str) -> dict:
    """The batch's ids with their pixel, sorted by id, one parquet file with row groups of
    ``INDEX_ROW_GROUP``; metadata ``pzpipe_index``: n, min, max and ``INDEX_SAMPLE``
    evenly spaced ids of the sorted list."""
    rep = json.loads((Path(batch_dir) / "report.json").read_text())
    parts = []
    for f in rep["files"]:
        k, p = f["pixel"]
        ids = pq.read_table(Path(batch_dir) / f["path"], columns=[id_column]).column(0)
        n = len(ids)
        parts.append(pa.table([ids.cast(pa.int64()), pa.array(np.full(n, k, np.uint8)),
                               pa.array(np.full(n, p, np.uint64))],
                              schema=_index_schema(id_column)))
    schema = _index_schema(id_column)
    t = pa.concat_tables(parts) if parts else schema.empty_table()
    t = t.sort_by(id_column)
    n = t.num_rows
    ids = t.column(id_column).to_numpy()
    pos = np.unique(np.linspace(0, n - 1, min(n, INDEX_SAMPLE)).astype(np.int64)) if n else []
    meta = {"n": n, "sample": [int(ids[i]) for i in pos],
            "min": int(ids[0]) if n else None, "max": int(ids[-1]) if n else None}
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for s in range(0, n, INDEX_ROW_GROUP):
                w.write_table(t.slice(s, INDEX_ROW_GROUP), row_group_size=INDEX_ROW_GROUP)
            w.add_key_value_metadata({"pzpipe_index": json.dumps(meta)})
    return {"batch": rep["batch"], "rows": n}


def bucket_bounds(batch_files: list[str], buckets: int) -> np.ndarray:
    """``buckets - 1`` id boundaries: equal shares of the pooled id samples of every batch
    file, each sample weighted by its file's rows (same result in every job)."""
    vals, weights = [], []
    for f in batch_files:
        md = pq.ParquetFile(f).metadata.metadata or {}
        if b"pzpipe_index" not in md:
            raise PipelineError(f"'{f}' has no pzpipe_index metadata: not written by "
                                f"collection.run_index_batch (rerun rule index_batch)")
        meta = json.loads(md[b"pzpipe_index"])
        s = meta.get("sample") or []
        if s:
            vals.append(np.asarray(s, dtype=np.int64))
            weights.append(np.full(len(s), meta["n"] / len(s)))
    if buckets <= 1:
        return np.array([], dtype=np.int64)
    if not vals:                       # no id at all: every bucket empty but the last
        return np.full(buckets - 1, np.iinfo(np.int64).min, dtype=np.int64)
    v = np.concatenate(vals)
    w = np.concatenate(weights)
    o = np.argsort(v, kind="stable")
    v, cw = v[o], np.cumsum(w[o])
    targets = cw[-1] * np.arange(1, buckets) / buckets
    return v[np.minimum(np.searchsorted(cw, targets), len(v) - 1)]


def run_index_bucket(batch_files: list[str], bucket: int, buckets: int, id_column: str,
                     out_dir: str) -> dict:
    """Ids in ``[bound[bucket-1], bound[bucket])`` from every batch file, sorted, into
    ``out_dir/part.<bucket>.parquet`` + ``out_dir/report.json``."""
    import pyarrow.compute as pc

    b = bucket_bounds(batch_files, buckets)
    assert len(b) == buckets - 1
    lo = int(b[bucket - 1]) if bucket > 0 else None
    hi = int(b[bucket]) if bucket < buckets - 1 else None
    schema = _index_schema(id_column)
    parts = []
    for f in batch_files:
        pf = pq.ParquetFile(f)
        ci = pf.schema_arrow.get_field_index(id_column)
        for rg in range(pf.metadata.num_row_groups):
            st = pf.metadata.row_group(rg).column(ci).statistics
            if st is not None and st.has_min_max and (
                    (lo is not None and st.max < lo) or (hi is not None and st.min >= hi)):
                continue
            t = pf.read_row_group(rg)
            col = t.column(id_column)
            mask = None
            if lo is not None:
                mask = pc.greater_equal(col, lo)
            if hi is not None:
                m2 = pc.less(col, hi)
                mask = m2 if mask is None else pc.and_(mask, m2)
            parts.append(t.filter(mask) if mask is not None else t)
    t = (pa.concat_tables(parts) if parts else schema.empty_table()).sort_by(id_column)
    out = Path(out_dir)
    name = f"part.{bucket}.parquet"
    with atomic_dir(out) as tmp:
        (tmp / "index").mkdir()
        rel = f"dataset/index/{name}"
        f = tmp / "index" / name
        pq.write_table(t, f, row_group_size=INDEX_ROW_GROUP, compression="zstd",
                       sorting_columns=[pq.SortingColumn(0)], data_page_size=16 * 1024)
        rep = {"bucket": bucket, "buckets": buckets, "lo": lo, "hi": hi, "rows": t.num_rows,
               "files": [{"path": rel, "rows": t.num_rows,
                          "row_groups": pq.ParquetFile(f).metadata.num_row_groups,
                          "bytes": f.stat().st_size, "sha256": provenance.sha256_file(str(f)),
                          "local": f"index/{name}"}]}
        write_json_atomic(tmp / REPORT, rep)
    return rep


def write_index_metadata(root, *, total_rows: int, id_column: str, primary: str = PRIMARY
                         ) -> None:
    """properties, dataset/_common_metadata and dataset/_metadata of the index catalog
    (hats' writers; lsdb's ``id_search`` reads ``_metadata``: one entry per row group of
    the index, ~40k at 40e9 ids)."""
    from hats.catalog import TableProperties
    from hats.io import write_parquet_metadata

    root = Path(root)
    TableProperties(catalog_name=index_name(id_column), catalog_type="index",
                    total_rows=int(total_rows), primary_catalog=f"../{primary}",
                    indexing_column=id_column, extra_columns=[],
                    hats_builder="pzpipe").to_properties_file(root)
    write_parquet_metadata(root, order_by_healpix=False)


def write_collection_properties(root, name: str, *, margin: str | None, index: str | None,
                                id_column: str) -> None:
    """``collection.properties`` (hats' CollectionProperties) naming the primary catalog,
    its default margin and its default index."""
    from hats.catalog.dataset.collection_properties import CollectionProperties

    kw = {"obs_collection": name, "hats_primary_table_url": PRIMARY}
    if margin:
        kw.update(all_margins=[margin], default_margin=margin)
    if index:
        kw.update(all_indexes={id_column: index}, default_index=id_column)
    CollectionProperties(**kw).to_properties_file(root)


def n_index_buckets(n_objects: int, ids_per_job: float) -> int:
    return max(1, math.ceil(n_objects / float(ids_per_job)))
