"""Partition stage: input catalog rows -> skinny chunks of AB magnitudes.

``transform`` turns one chunk of raw input columns into the skinny table: fluxes
(nJy) to AB magnitudes (``-2.5 log10(f) + 31.4``, errors propagated), non-detections
(NaN, inf, non-positive flux or non-finite magnitude) to ``nondetect_val`` with a
per-band flag bit, optional dereddening and rounding, then the configured cuts. Cut
rows are counted by reason (first failing reason, in ``CUT_REASONS`` order), never
dropped silently. ``run_batch`` writes one parquet file per batch, one row group per
chunk, with per-chunk bookkeeping in the schema metadata (key ``pzpipe``).
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError
from pzpipe.core.hatsio import HEALPIX_COL, spatial_index
from pzpipe.core.io import atomic_path, available_columns, parquet_meta, read_rows
from pzpipe.core.columns import FLAG_BAD_ERR, ID_COL, err_col, int_ids, mag_col
from pzpipe.run.layout import Chunk, Layout

log = logging.getLogger(__name__)

AB_ZEROPOINT_NJY = 31.4
CUT_REASONS = ("require_true", "no_detections", "ref_mag_max", "ref_mag_min", "max_mag_err")


def input_columns(cfg: dict, extra: list[str] = ()) -> list[str]:
    """The raw columns the partition needs from an input file."""
    c = cfg["columns"]
    kind = cfg["inputs"]["photometry"]
    cols = [c["id"]]
    for b in cfg["bands"]:
        cols += [c[kind].format(band=b), c[f"{kind}_err"].format(band=b)]
    if cfg["partition"]["deredden"]["enabled"]:
        cols.append(c["ebv"])
    cols += list(cfg["partition"]["cuts"]["require_true"])
    for k in ("ra", "dec"):
        if c[k]:
            cols.append(c[k])
    cols += list(extra)
    return list(dict.fromkeys(cols))


def check_columns(path: str, cfg: dict, extra: list[str] = (),
                  extra_key: str | None = None) -> list[str]:
    """Raise a PipelineError naming file, column and fix when a needed column is missing.

    ``extra_key``: the config key that names the ``extra`` columns (e.g.
    'training.redshift'), so the message points at the setting to fix."""
    have = available_columns(path, cfg["inputs"]["hdf5_group"])
    need = input_columns(cfg, extra)
    missing = [c for c in need if c not in have]
    if missing:
        import difflib

        col = missing[0]
        close = difflib.get_close_matches(col, have, n=3)
        hint = f" Did you mean {close}?" if close else ""
        if extra_key and col in extra:
            fix = f"Set '{extra_key}' to the file's column with the true redshift."
        else:
            fix = ("Fix the 'columns' section of the config (templates use '{band}'), or "
                   "inputs.photometry (mag/flux).")
        raise PipelineError(
            f"file '{path}': column '{col}' not found ({len(missing)} missing: "
            f"{missing[:6]}).{hint} {fix}")
    return need


def check_catalog_columns(layout: Layout, cfg: dict) -> None:
    """A HATS input has the columns the run needs, from its schema (``_common_metadata``):
    checked when the workflow starts, before any job, naming the catalog and the column."""
    import difflib
    import os

    from pzpipe.core import hatsio

    if not layout.is_hats or not layout.catalog or not os.path.isdir(layout.catalog):
        return
    have = hatsio.catalog_schema(layout.catalog).names
    missing = [c for c in input_columns(cfg) if c not in have]
    if missing:
        close = difflib.get_close_matches(missing[0], have, n=3)
        raise PipelineError(
            f"HATS catalog '{layout.catalog}': column '{missing[0]}' not found "
            f"({len(missing)} missing: {missing[:6]})."
            + (f" Did you mean {close}?" if close else "")
            + " Fix the 'columns' section of the config (templates use '{band}'), "
              "inputs.photometry (mag/flux) or partition.cuts.require_true.")


def _numeric(path, name, arr, rows):
    if arr.dtype.kind == "b":
        raise PipelineError(
            f"file '{path}' rows {rows}: column '{name}' holds booleans; photometry columns "
            f"must be numbers. Check the column templates in the config.")
    if arr.dtype.kind not in "fiu":
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise PipelineError(
                f"file '{path}' rows {rows}: column '{name}' has non-numeric values "
                f"(dtype {arr.dtype}); photometry columns must be numbers.") from exc
    return arr.astype(np.float64)


def transform(raw: dict[str, np.ndarray], cfg: dict, path: str = "<memory>",
              rows: str = "", extra: list[str] = ()) -> tuple[dict[str, np.ndarray], dict]:
    """Raw input columns -> (skinny columns, counts). See the module docstring."""
    c = cfg["columns"]
    p = cfg["partition"]
    kind = cfg["inputs"]["photometry"]
    nd = float(p["nondetect_val"])
    bands = cfg["bands"]
    first = rows.split("-")[0] if rows else ""
    ids = int_ids(raw[c["id"]], f"file '{path}' rows {rows}", c["id"],
                  int(first) if first.isdigit() else None)
    n = len(ids)
    flags = np.zeros(n, dtype=np.int32)
    out = {ID_COL: ids}
    detected = np.zeros((n, len(bands)), dtype=bool)
    for bi, b in enumerate(bands):
        vname = c[kind].format(band=b)
        ename = c[f"{kind}_err"].format(band=b)
        val = _numeric(path, vname, raw[vname], rows)
        err = _numeric(path, ename, raw[ename], rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "flux":
                det = np.isfinite(val) & (val > 0)
                mag = np.where(det, -2.5 * np.log10(np.where(det, val, 1.0)) + AB_ZEROPOINT_NJY, nd)
                merr = 2.5 / math.log(10) * err / np.where(det, val, 1.0)
                # non-detection: error column holds the 1-sigma limiting magnitude
                lim = np.where(np.isfinite(err) & (err > 0),
                               -2.5 * np.log10(np.where(err > 0, err, 1.0)) + AB_ZEROPOINT_NJY, nd)
                merr = np.where(det, merr, lim)
            else:
                det = np.isfinite(val) & (val != nd)
                mag = np.where(det, val, nd)
                merr = np.where(np.isfinite(err), err, nd)
        bad_err = det & ~(np.isfinite(merr) & (merr > 0))
        if bad_err.any():
            # a detection without a usable error cannot be used: treat as non-detection
            det = det & ~bad_err
            mag = np.where(bad_err, nd, mag)
            merr = np.where(bad_err, nd, merr)
            flags |= np.where(bad_err, FLAG_BAD_ERR, 0).astype(np.int32)
        if n > 0 and not det.any() and n >= 1000:
            raise PipelineError(
                f"file '{path}' rows {rows}: band '{b}' (column '{vname}') has no usable "
                f"value in any of {n} rows (all NaN/inf/non-positive). Check the column "
                f"template columns.{kind} or remove '{b}' from bands.")
        detected[:, bi] = det
        flags |= np.where(det, 0, 1 << bi).astype(np.int32)
        out[mag_col(b)] = mag
        out[err_col(b)] = merr
    if p["deredden"]["enabled"]:
        ebv = _numeric(path, c["ebv"], raw[c["ebv"]], rows)
        if not np.all(np.isfinite(ebv)):
            raise PipelineError(f"file '{path}' rows {rows}: E(B-V) column '{c['ebv']}' has "
                                f"NaN/inf values; fix the input or disable dereddening.")
        for bi, b in enumerate(bands):
            coeff = p["deredden"]["coefficients"][b]
            out[mag_col(b)] = np.where(detected[:, bi], out[mag_col(b)] - coeff * ebv,
                                       out[mag_col(b)])
    if p["round_decimals"] is not None:
        for b in bands:
            for col in (mag_col(b), err_col(b)):
                out[col] = np.where(out[col] == nd, nd, np.round(out[col], p["round_decimals"]))
    for k in ("ra", "dec"):
        if c[k]:
            out[k] = _numeric(path, c[k], raw[c[k]], rows)
    for e in extra:
        out[e] = raw[e]
    out["flags"] = flags

    # cuts, in CUT_REASONS order; each row gets the first reason it fails
    cut = np.zeros(n, dtype=bool)
    counts = {}
    cuts = p["cuts"]

    def apply(reason, fails):
        nonlocal cut
        new = fails & ~cut
        counts[reason] = int(new.sum())
        cut |= new

    req = np.zeros(n, dtype=bool)
    for col in cuts["require_true"]:
        v = raw[col]
        if v.dtype.kind != "b":
            raise PipelineError(f"file '{path}': cut column '{col}' (partition.cuts."
                                f"require_true) must be boolean, found {v.dtype}")
        req |= ~v
    apply("require_true", req)
    apply("no_detections", detected.sum(axis=1) < cuts["min_detected_bands"])
    ref = out[mag_col(cfg["ref_band"])]
    ref_det = detected[:, bands.index(cfg["ref_band"])]
    if cuts["ref_mag_max"] is not None:
        apply("ref_mag_max", ~ref_det | (ref > cuts["ref_mag_max"]))
    else:
        counts["ref_mag_max"] = 0
    if cuts["ref_mag_min"] is not None:
        apply("ref_mag_min", ref_det & (ref < cuts["ref_mag_min"]))
    else:
        counts["ref_mag_min"] = 0
    if cuts["max_mag_err"] is not None:
        errs = np.stack([out[err_col(b)] for b in bands], axis=1)
        apply("max_mag_err", (detected & (errs > cuts["max_mag_err"])).any(axis=1))
    else:
        counts["max_mag_err"] = 0
    keep = ~cut
    skinny = {k: v[keep] for k, v in out.items()}
    for b in bands:
        skinny[mag_col(b)] = skinny[mag_col(b)].astype(np.float32)
        skinny[err_col(b)] = skinny[err_col(b)].astype(np.float32)
    stats = {"rows_in": int(n), "rows_out": int(keep.sum()), "cut": counts,
             "nondetected": {b: int((~detected[keep, i]).sum()) for i, b in enumerate(bands)},
             "bad_err": int(((flags & FLAG_BAD_ERR) != 0)[keep].sum())}
    return skinny, stats


def check_unique(ids: np.ndarray, where: str, idname: str) -> None:
    u, cnt = np.unique(ids, return_counts=True)
    if (cnt > 1).any():
        dup = u[cnt > 1]
        raise PipelineError(
            f"{where}: {len(dup)} duplicate value(s) in id column '{idname}' "
            f"(e.g. {dup[:5].tolist()}). Every object must have a unique id: deduplicate the "
            f"input or set columns.id to the unique object id column.")


def locate_ids(cfg: dict, ids, batches: list[str] | None = None, per_id: int = 2,
               max_ids: int = 3) -> dict[int, list[str]]:
    """Where ``ids`` (the first ``max_ids``) are in the user's input: for each, up to
    ``per_id`` places "file 'X' row r" (rows counted from 0 in the file).

    The user's input is ``inputs.files`` when the pipeline imported them as HATS (the
    imported catalog is the pipeline's own file, which the user never wrote), else the
    configured input (files or the user's HATS catalog), restricted to ``batches`` when
    given. Reads only the id column, one chunk at a time (memory of one chunk), and stops
    once every id has ``per_id`` places: called on the error path only."""
    from pzpipe.run.layout import import_enabled, make_layout

    lay = make_layout(cfg)            # without `imported`: inputs.files themselves
    if batches is not None and not import_enabled(cfg):
        chunks = [c for b in batches for c in lay.batch_chunks(b)]
    else:
        chunks = lay.chunks()
    want = np.unique(np.asarray(ids, dtype=np.int64))[:max_ids]
    found: dict[int, list[str]] = {int(i): [] for i in want}
    col, group = cfg["columns"]["id"], cfg["inputs"]["hdf5_group"]
    for ch in chunks:
        v = read_rows(ch.file, [col], ch.start, ch.stop, group)[col]
        for h in np.flatnonzero(np.isin(v, want)):
            places = found[int(v[h])]
            if len(places) < per_id:
                places.append(f"file '{ch.file}' row {ch.start + int(h)}")
        if all(len(p) >= per_id for p in found.values()):
            break
    return found


def duplicate_ids_error(cfg: dict, dup, head: str, batches: list[str] | None = None,
                        where: str = "") -> PipelineError:
    """One line for the duplicate object ids ``dup``: ``head`` (how many, what), examples,
    and where the first ones are in the user's input files (``locate_ids``; ``where`` if
    they cannot be located)."""
    dup = np.asarray(dup, dtype=np.int64)
    try:
        found = locate_ids(cfg, dup, batches)
    except Exception as exc:  # noqa: BLE001 - the duplicates are the error to report
        log.warning("could not locate the duplicate ids in the input: %s", exc)
        found = {}
    places = "; ".join(f"id {i} at {' and '.join(p)}" for i, p in found.items() if p)
    return PipelineError(
        f"{head} (e.g. {dup[:5].tolist()})"
        + (f": {places} (rows counted from 0)" if places else f" in {where}" if where else "")
        + ". Every object must have a unique id: deduplicate the input or set columns.id "
          "to the unique object id column.")


def partition_schema(cfg: dict, hats: bool = False) -> pa.Schema:
    """Columns of a partition file: id, magnitudes and errors, coordinates (as ``ra``,
    ``dec``) when configured, the HATS spatial index for HATS inputs, flags."""
    fields = [pa.field(ID_COL, pa.int64())]
    for b in cfg["bands"]:
        fields += [pa.field(mag_col(b), pa.float32()), pa.field(err_col(b), pa.float32())]
    for k in ("ra", "dec"):
        if cfg["columns"][k]:
            fields.append(pa.field(k, pa.float64()))
    if hats:
        fields.append(pa.field(HEALPIX_COL, pa.int64()))
    fields.append(pa.field("flags", pa.int32()))
    return pa.schema(fields)


def _check_file_rows(path: str, expected: int, cfg: dict, source: str) -> None:
    """The file holds as many rows as the layout (its metadata) says: more rows would
    never be read (a silent drop), fewer would be a truncated file."""
    from pzpipe.run.layout import file_rows

    if expected < 0:
        return
    n = file_rows(path, cfg["inputs"]["hdf5_group"])
    if n != expected:
        raise PipelineError(
            f"file '{path}' holds {n} rows but the layout ({source or 'input metadata'}) "
            f"says {expected}: the metadata is stale or the file changed since the run was "
            f"planned. Rewrite the catalog's metadata (hats.io.write_parquet_metadata with "
            f"create_per_partition_stats=True) or the input descriptor, then rerun.")


def _hats_extra(path: str, cfg: dict, hats: bool) -> list[str]:
    """The spatial-index column to read from a HATS pixel file (computed when absent)."""
    if not hats:
        return []
    return [HEALPIX_COL] if HEALPIX_COL in available_columns(path, cfg["inputs"]["hdf5_group"]) else []


def process_chunk(chunk: Chunk, cfg: dict, raw: dict | None = None,
                  hats: bool = False) -> tuple[pa.Table, dict]:
    """One chunk -> (skinny table, bookkeeping). ``raw``: the chunk's raw columns when the
    caller already read them (else they are read here)."""
    extra = _hats_extra(chunk.file, cfg, hats)
    need = check_columns(chunk.file, cfg, extra)
    if raw is None:
        raw = read_rows(chunk.file, need, chunk.start, chunk.stop, cfg["inputs"]["hdf5_group"])
    got = len(raw[cfg["columns"]["id"]])
    if got != chunk.rows:
        raise PipelineError(f"file '{chunk.file}': expected rows {chunk.start}-{chunk.stop} "
                            f"from its metadata but read {got}; the file changed or is "
                            f"truncated. Re-stage it and rerun.")
    skinny, stats = transform(raw, cfg, chunk.file, f"{chunk.start}-{chunk.stop}", extra=extra)
    if hats:
        if HEALPIX_COL not in skinny:
            skinny[HEALPIX_COL] = spatial_index(skinny["ra"], skinny["dec"])
        skinny[HEALPIX_COL] = np.asarray(skinny[HEALPIX_COL], dtype=np.int64)
    table = pa.table({f.name: pa.array(skinny[f.name], type=f.type)
                      for f in partition_schema(cfg, hats)})
    stats.update(chunk=chunk.index, file=chunk.file, start=chunk.start, stop=chunk.stop)
    if chunk.pixel is not None:
        stats["pixel"] = list(chunk.pixel)
    return table, stats


# a file's chunks of one batch are read with one read when they span at most this many rows
READ_ONCE_ROWS = 4_000_000


def _batch_chunks_with_raw(chunks: list[Chunk], cfg: dict, hats: bool, source: str):
    """Yield (chunk, raw columns or None): a file's chunks are read with one read of the
    needed columns (a HATS pixel file often has one row group) when small enough."""
    from itertools import groupby

    for path, group in groupby(chunks, key=lambda c: c.file):
        group = list(group)
        _check_file_rows(path, group[0].file_rows, cfg, source)
        lo, hi = group[0].start, group[-1].stop
        if len(group) == 1 or hi - lo > READ_ONCE_ROWS:
            for ch in group:
                yield ch, None
            continue
        need = check_columns(path, cfg, _hats_extra(path, cfg, hats))
        raw = read_rows(path, need, lo, hi, cfg["inputs"]["hdf5_group"])
        for ch in group:
            yield ch, {k: v[ch.start - lo:ch.stop - lo] for k, v in raw.items()}
        del raw


def write_partition(path: str, schema: pa.Schema, chunks, meta: dict) -> dict:
    """Write a partition file (the one writer: the partition stage, the validation sample,
    the benchmark): one row group per non-empty chunk of ``chunks`` (an iterable of
    ``(table, stats)``; ``stats`` gets its ``row_group``: None for a chunk whose rows were
    all cut), zstd, and the ``pzpipe`` key-value metadata ``meta`` + ``chunks`` (the list of
    stats). Returns the metadata written. The caller makes the write atomic."""
    stats_all = []
    n_groups = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for table, stats in chunks:
            stats["row_group"] = None
            if table.num_rows:
                stats["row_group"] = n_groups
                n_groups += 1
                writer.write_table(table.cast(schema), row_group_size=table.num_rows)
            stats_all.append(stats)
        meta = {**meta, "chunks": stats_all}
        writer.add_key_value_metadata({"pzpipe": json.dumps(meta)})
    return meta


def sample_chunks(data: dict, schema: pa.Schema, chunk_rows: int):
    """An in-memory sample (columns of ``schema``) as ``(table, stats)`` chunks of
    ``chunk_rows`` rows, nothing cut, for :func:`write_partition`."""
    n = len(data[ID_COL])
    for i, s in enumerate(range(0, n, chunk_rows)):
        e = min(n, s + chunk_rows)
        table = pa.table({f.name: pa.array(data[f.name][s:e], type=f.type) for f in schema})
        yield table, {"chunk": i, "rows_in": e - s, "rows_out": e - s, "cut": {}}


def run_batch(layout: Layout, batch: str, cfg: dict, output: str) -> dict:
    """Partition the chunks of one batch into ``output`` (one row group per chunk)."""
    schema = partition_schema(cfg, layout.is_hats)
    chunks = layout.batch_chunks(batch)
    if not chunks:
        raise PipelineError(f"batch {batch} has no chunks in the current layout")
    seen_ids = []

    def tables():
        for ch, raw in _batch_chunks_with_raw(chunks, cfg, layout.is_hats, layout.source):
            table, stats = process_chunk(ch, cfg, raw, layout.is_hats)
            seen_ids.append(table.column(ID_COL).to_numpy())
            log.info("chunk %d (%s rows %d-%d): %d in, %d out, cut %s", ch.index, ch.file,
                     ch.start, ch.stop, stats["rows_in"], stats["rows_out"], stats["cut"])
            yield table, stats
        ids = np.concatenate(seen_ids) if seen_ids else np.array([], dtype=np.int64)
        seen_ids.clear()
        ids.sort()
        dup = np.unique(ids[1:][ids[1:] == ids[:-1]])
        if len(dup):
            raise duplicate_ids_error(
                cfg, dup, f"{len(dup)} duplicate value(s) in id column "
                          f"'{cfg['columns']['id']}' of the input", [batch], f"batch {batch}")

    with atomic_path(output) as tmp:
        return write_partition(tmp, schema, tables(), {
            "batch": batch, "bands": cfg["bands"], "id_column": cfg["columns"]["id"],
            "kind": layout.kind, "nondetect_val": cfg["partition"]["nondetect_val"]})


def read_meta(path: str) -> dict:
    """The partition file's bookkeeping (PipelineError when it has none)."""
    return parquet_meta(path, required=True)


def check_id_column(path: str, column: str, batch_rows: int = 1 << 20) -> None:
    """The id column of the parquet file ``path`` holds ids the partition accepts
    (``core.columns.int_ids``), read ``batch_rows`` at a time (the memory of one batch):
    the import checks the user's files, whose rows the imported catalog reorders."""
    start = 0
    for b in pq.ParquetFile(path).iter_batches(columns=[column], batch_size=batch_rows):
        v = b.column(0).to_numpy(zero_copy_only=False)
        int_ids(v, f"file '{path}' rows {start}-{start + len(v)}", column, start)
        start += len(v)


def import_objects(files, cfg: dict, output: str, threads: int = 1, mem_mb: int = 4000) -> str:
    """Rule entry point: ``inputs.files`` (with coordinates) -> a HATS catalog at ``output``
    with hats-import, after checking that every file has the columns the run needs (one
    error naming the odd file, instead of hats-import's bare KeyError)."""
    from pzpipe.core import hatsio

    files = [str(f) for f in files]
    for f in files:                   # same message as the partition's (names file + column)
        check_columns(f, cfg)
    for f in files:                   # ids the partition would refuse, named in the user's file
        check_id_column(f, cfg["columns"]["id"])
    th = cfg["inputs"]["to_hats"]
    return hatsio.import_catalog(
        files, output, ra_column=cfg["columns"]["ra"], dec_column=cfg["columns"]["dec"],
        catalog_name=f"{cfg['release']}_objects", pixel_threshold=th["pixel_threshold"],
        highest_order=th["highest_order"], threads=threads, mem_mb=mem_mb,
        scheduler=th["dask"]["scheduler"], tmp_dir=th["dask"]["tmp_dir"])


