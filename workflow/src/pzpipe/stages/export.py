"""Export stage: the release catalog, in per-batch jobs that scale.

Four steps, one rule each (workflow/rules/export.smk):

1. :func:`run_batch` (one job per batch, in parallel): checks the batch's object
   conservation chunk by chunk (``rows_in = rows_out + cut``; every estimator has the
   partition's rows with the same object ids in the same order), joins the estimators'
   columns into the release rows and writes the batch's release files - one file per
   HATS pixel (``dataset/Norder=k/Dir=d/Npix=p.parquet``, one row group per chunk) or,
   for inputs without coordinates, one ``dataset/part-<batch>.parquet`` - plus a report
   (rows, cuts, bytes, sha256 of every file) and the batch's object ids, hashed with a
   bijection and sorted into buckets, for the duplicate check.
2. :func:`run_dedup` (one job per bucket): the ids of one hash bucket from every batch;
   any id seen twice is a duplicate across batches (within a batch the partition already
   refused duplicates).
3. :func:`run_release` (one job): reads only the per-batch and per-bucket reports,
   hard-links the batches' files into the photo-z catalog directory
   (``results/export/catalog``), writes the catalog metadata with the hats library
   (partition info, ``_common_metadata``, properties with the provenance),
   ``manifest_files.csv`` (every file's rows, bytes, sha256, batch),
   ``conservation.json`` and the record the release job turns into ``manifest.json`` and
   ``README.md``.
4. :func:`run_collection` (one job, after the margin and index jobs of
   :mod:`pzpipe.stages.collection`): the release folder, a HATS collection (photo-z
   catalog, margin catalog, id index) that a receiver can use and verify alone: the files
   hard-linked, the catalogs' metadata, ``collection.properties``, ``manifest.json``
   (sha256 of every file), ``README.md``, the PDF format spec and a numpy decoder, the
   validation summary, every estimator's RAIL configuration and data files
   (``pzpipe.release.bundle``). Written to a temporary name and renamed into place: a
   failed export leaves no release directory.

Memory at 40e9 objects (~300k chunks, ~20k pixels, batches of ``chunks_per_batch``
chunks): a batch job holds one chunk's rows of every estimator (~130k x 7 estimators,
~100 MB) and the batch's id hashes (8 B/object: 0.6 GB at 620 chunks/batch); a bucket job
holds ``export.dedup_ids_per_job`` hashes (1.2 GB at the default 1.5e8); the final job
holds one entry per pixel (a few MB) and streams the reports. docs/scaling.md has the
figures for every job.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError, algorithms
from pzpipe.core import hatsio
from pzpipe.run import provenance
from pzpipe.release import pdfstore
from pzpipe.run.config import config_hash
from pzpipe.core.io import atomic_dir, atomic_path, parquet_meta, write_json_atomic
from pzpipe.run.layout import Layout, batch_id
from pzpipe.stages.partition import ID_COL, read_meta
from pzpipe.release.schema import release_schema
from pzpipe.core.zgrid import spec as zgrid_spec

log = logging.getLogger(__name__)

REPORT = "report.json"
CATALOG_JSON = "release.json"      # the catalog step's record for the release job
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# ---------------------------------------------------------------------------- id hashing
def mix64(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 (distinct ids <-> distinct hashes)
    that spreads any id structure evenly over the hash range. ``inplace``: overwrite ``x``
    (an int64/uint64 array) to spare a copy."""
    x = np.asarray(x)
    x = x.view(np.uint64) if inplace else x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def unmix64(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`mix64` (to name the ids behind duplicate hashes)."""
    y = np.asarray(y).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        y ^= (y >> np.uint64(31)) ^ (y >> np.uint64(62))
        y *= np.uint64(0x319642B2D24D8EC3)
        y ^= (y >> np.uint64(27)) ^ (y >> np.uint64(54))
        y *= np.uint64(0x96DE1B173F119089)
        y ^= (y >> np.uint64(30)) ^ (y >> np.uint64(60))
    return y


def n_buckets(n_objects: int, ids_per_job: float) -> int:
    return max(1, math.ceil(n_objects / float(ids_per_job)))


def bucket_thresholds(k: int) -> np.ndarray:
    """The k-1 hash values where buckets 1..k-1 start (equal ranges of the hash space);
    every batch file uses the same, so an id is in the same bucket everywhere."""
    return np.array([(j * 2**64 + k - 1) // k for j in range(1, k)], dtype=np.uint64)


def bucket_of(h: np.ndarray, k: int) -> np.ndarray:
    """Bucket (0..k-1) of each hash; a sorted hash array is sorted by bucket."""
    return np.searchsorted(bucket_thresholds(k), h, side="right")


def write_id_buckets(ids: np.ndarray, k: int, path: str, batch: str | None = None) -> None:
    """The batch's ids as sorted hashes, one row group per non-empty bucket; the metadata
    maps bucket -> row group and names the ``batch``. ``ids`` (int64) is overwritten with
    the hashes."""
    ids = np.asarray(ids, dtype=np.int64)
    # the caller's array becomes the hashes (no copy) unless it is read-only
    h = mix64(ids, inplace=ids.flags.writeable)
    h.sort()
    bounds = np.concatenate([[0], np.searchsorted(h, bucket_thresholds(k), side="left"),
                             [len(h)]])
    schema = pa.schema([pa.field("h", pa.uint64())])
    groups = {}
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for j in range(k):
                lo, hi = int(bounds[j]), int(bounds[j + 1])
                if hi > lo:
                    groups[j] = len(groups)
                    w.write_table(pa.table({"h": h[lo:hi]}, schema=schema), row_group_size=hi - lo)
            w.add_key_value_metadata({"pzpipe": json.dumps({"buckets": k, "row_groups": groups,
                                                            "n": int(len(h)), "batch": batch})})


# ---------------------------------------------------------------------------- per batch
def _tile_path(layout: Layout, chunk, batch: str) -> str:
    """Release-relative path of the file holding ``chunk``."""
    if layout.is_hats:
        k, p = chunk["pixel"] if isinstance(chunk, dict) else chunk.pixel
        return os.path.relpath(hatsio.pixel_file("", k, p), "")
    return f"dataset/part-{batch}.parquet"


def _columns(cfg: dict) -> tuple[str, str | None, str | None]:
    c = cfg["columns"]
    return c["id"], c["ra"] or None, c["dec"] or None


def schema_for(layout: Layout, algos: list[str], cfg: dict) -> pa.Schema:
    idc, ra, dec = _columns(cfg)
    return release_schema(cfg, algos, id_column=idc, ra_column=ra, dec_column=dec,
                          hats=layout.is_hats,
                          extra_metadata={"config_hash": config_hash(cfg),
                                          "code": provenance.code_version()})


def _release_table(schema: pa.Schema, part: pa.Table, ests: dict[str, pa.Table],
                   cfg: dict) -> pa.Table:
    idc, ra, dec = _columns(cfg)
    cols = {idc: part.column(ID_COL)}
    if ra:
        cols[ra] = part.column("ra")
        cols[dec] = part.column("dec")
    if hatsio.HEALPIX_COL in schema.names:
        cols[hatsio.HEALPIX_COL] = part.column(hatsio.HEALPIX_COL)
    for a, t in ests.items():
        for name in t.column_names:
            if name != ID_COL:
                cols[f"{a}_{name}"] = t.column(name)
    return pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema)


def run_batch(layout: Layout, batch: str, algos: list[str], cfg: dict, partition_file: str,
              estimate_files: dict[str, str], out_dir: str, ids_out: str,
              buckets: int = 1) -> dict:
    """Check and write one batch's release files into ``out_dir`` (see module docstring)."""
    meta = read_meta(partition_file)
    errors = []
    lo, hi = layout.batch_range(batch)
    expected = {c.index: c for c in layout.batch_chunks(batch)}
    chunks = meta["chunks"]
    if sorted(ch["chunk"] for ch in chunks) != sorted(expected):
        errors.append(f"partition {partition_file}: chunks {[c['chunk'] for c in chunks][:10]} "
                      f"but the layout has chunks {lo}-{hi - 1}")
    for ch in chunks:
        ncut = sum(ch["cut"].values())
        if ch["rows_in"] != ch["rows_out"] + ncut:
            errors.append(f"chunk {ch['chunk']}: rows_in {ch['rows_in']} != rows_out "
                          f"{ch['rows_out']} + cut {ncut}")
        exp = expected.get(ch["chunk"])
        if exp is not None and exp.rows != ch["rows_in"]:
            errors.append(f"chunk {ch['chunk']}: {ch['rows_in']} input rows, the layout "
                          f"expects {exp.rows}")
    prow = sum(ch["rows_out"] for ch in chunks)
    efiles = {a: pq.ParquetFile(estimate_files[a]) for a in algos}
    for a, pf in efiles.items():
        n = pf.metadata.num_rows
        if n != prow:
            errors.append(f"{a}: {n} rows in {estimate_files[a]}, the partition has {prow}")
    if errors:
        raise PipelineError(f"object conservation check failed in batch {batch}:\n  "
                            + "\n  ".join(errors[:20]))
    schema = schema_for(layout, algos, cfg)
    pfile = pq.ParquetFile(partition_file)
    pcols = [c for c in (ID_COL, "ra", "dec", hatsio.HEALPIX_COL) if c in pfile.schema_arrow.names]
    out = Path(out_dir)
    tiles: dict[str, dict] = {}
    ids_all = np.empty(prow, dtype=np.int64)       # the batch's ids, for the duplicate check
    n_ids = 0
    with atomic_dir(out) as tmp:
        writer, wpath = None, None
        for ch in chunks:
            path = _tile_path(layout, ch if layout.is_hats else None, batch)
            tile = tiles.setdefault(path, {"path": path, "rows": 0, "row_groups": 0,
                                           "chunks": [], "pixel": ch.get("pixel")})
            tile["chunks"].append(ch["chunk"])
            if ch["row_group"] is None:
                continue
            rg = ch["row_group"]
            part = pfile.read_row_group(rg, columns=pcols)
            ids = part.column(ID_COL).to_numpy()
            ests = {}
            for a, pf in efiles.items():
                t = pf.read_row_group(rg)
                if not np.array_equal(t.column(ID_COL).to_numpy(), ids):
                    raise PipelineError(f"object conservation check failed in batch {batch}: "
                                        f"{a} chunk {ch['chunk']}: object ids differ from the "
                                        f"partition ({estimate_files[a]})")
                ests[a] = t
            table = _release_table(schema, part, ests, cfg)
            if wpath != path:
                if writer is not None:
                    writer.close()
                (tmp / path).parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(tmp / path, schema, **pdfstore.PARQUET_KWARGS)
                wpath = path
            writer.write_table(table, row_group_size=table.num_rows)
            tile["rows"] += table.num_rows
            tile["row_groups"] += 1
            ids_all[n_ids:n_ids + len(ids)] = ids
            n_ids += len(ids)
            del table, ests, part
        if writer is not None:
            writer.close()
        written = []
        for t in tiles.values():
            if t["rows"] == 0:
                continue          # every row of the pixel cut: no file (counted in the cuts)
            f = tmp / t["path"]
            t["bytes"] = f.stat().st_size
            t["sha256"] = provenance.sha256_file(str(f))
            written.append(t)
        cut = Counter()
        for ch in chunks:
            cut.update(ch["cut"])
        report = {"batch": batch, "kind": layout.kind, "chunks": len(chunks),
                  "chunk_range": [lo, hi],
                  "rows_in": sum(ch["rows_in"] for ch in chunks), "rows_out": prow,
                  "cut_by_reason": dict(sorted(cut.items())), "algorithms": list(algos),
                  "files": written, "empty_pixels": [t["pixel"] for t in tiles.values()
                                                     if t["rows"] == 0 and t["pixel"]]}
        write_json_atomic(tmp / REPORT, report)
        write_id_buckets(ids_all[:n_ids], int(buckets), ids_out, batch)
        del ids_all
    log.info("export %s: %d rows in %d file(s)", batch, prow, len(written))
    return report


# ---------------------------------------------------------------------------- duplicates
def run_dedup(ids_files: list[str], bucket: int, out: str, cfg: dict | None = None) -> dict:
    """Object ids seen in more than one batch, for one hash bucket.

    With ``cfg``, an error names where the first duplicates are in the user's input files
    (``partition.locate_ids``: the batches holding them, or ``inputs.files`` when they
    were imported as HATS)."""
    # one array of the bucket's hashes, filled file by file (the footers give the sizes):
    # the job's memory is 8 bytes per id of the bucket, once
    groups = []
    for f in ids_files:
        pf = pq.ParquetFile(f)
        md = parquet_meta(pf, required=True)
        rg = md["row_groups"].get(str(bucket))
        if rg is not None:
            groups.append((f, rg, pf.metadata.row_group(rg).num_rows))
    h = np.empty(sum(n for *_, n in groups), dtype=np.uint64)
    pos = 0
    for f, rg, n in groups:
        h[pos:pos + n] = pq.ParquetFile(f).read_row_group(rg).column("h").to_numpy()
        pos += n
    h.sort()
    dup = h[1:][h[1:] == h[:-1]]
    ids = np.unique(unmix64(dup).view(np.int64))
    report = {"bucket": bucket, "ids": int(len(h)), "duplicate_ids": int(len(ids)),
              "examples": ids[:20].tolist()}
    if len(ids):
        head = f"{len(ids)} object id(s) appear in more than one batch of the release"
        if cfg is None:
            raise PipelineError(f"{head} (e.g. {ids[:5].tolist()}): the input catalog has "
                                f"duplicate ids in different files/pixels. Deduplicate the "
                                f"input (or set columns.id to a unique column) and rerun.")
        from pzpipe.stages.partition import duplicate_ids_error

        del h
        # the batches whose hashes include the first duplicates (re-read: error path only)
        want = mix64(ids[:3])
        batches = []
        for f, rg, _ in groups:
            if np.isin(want, pq.ParquetFile(f).read_row_group(rg).column("h").to_numpy()).any():
                batches.append(parquet_meta(f, required=True).get("batch"))
        raise duplicate_ids_error(cfg, ids, f"{head}, id column '{cfg['columns']['id']}'",
                                  batches if None not in batches else None,
                                  f"batches {batches[:5]}")
    write_json_atomic(out, report)
    return report


# ---------------------------------------------------------------------------- release
def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def remove_leftover_temps(paths) -> None:
    """Remove Snakemake ``temp()`` files whose consumers have all finished, if still there
    (and their directory once empty): Snakemake deletes a temp file only right after its
    last consumer finishes, so a run killed in between leaves it for good, and no job of
    the resumed run consumes it again (tests/test_resume.py)."""
    for f in paths:
        if os.path.exists(f):
            os.remove(f)
    for d in {os.path.dirname(f) for f in paths}:
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)


def run_release(layout: Layout, algos: list[str], cfg: dict, batch_dirs: list[str],
                dedup_reports: list[str], model_sidecars: dict[str, str], out_dir: str,
                requirements: str | None = None, ids_files: list[str] = ()) -> dict:
    """Assemble the release from the per-batch outputs (reads only reports).

    ``requirements``: the validation's requirements.json; with ``validate.release_gate``
    on, an estimator failing a science goal stops the export (nothing is published).
    ``ids_files``: the batches' id hashes (Snakemake ``temp()`` outputs, consumed by the
    dedup jobs), removed once the release is in place if still there: Snakemake deletes a
    temp file only right after its consumer finishes, so a run killed in between leaves
    it for good (8 B/object)."""
    if requirements is not None:
        from pzpipe.stages.validate import check_release_gate

        check_release_gate(requirements, cfg)
    out = Path(out_dir)
    errors = []
    totals = Counter()
    cut = Counter()
    pixels: list[tuple[int, int]] = []
    n_chunks = n_files = 0
    bytes_total = 0
    with atomic_dir(out) as tmp:
        (tmp / "dataset").mkdir()
        with open(tmp / "manifest_files.csv", "w", newline="") as fcsv:
            w = csv.writer(fcsv)
            w.writerow(["path", "rows", "row_groups", "bytes", "sha256", "batch"])
            for i, d in enumerate(batch_dirs):
                rep = json.loads((Path(d) / REPORT).read_text())
                if rep["batch"] != batch_id(i):
                    errors.append(f"{d}: report of batch {rep['batch']}, expected {batch_id(i)}")
                if sorted(rep["algorithms"]) != sorted(algos):
                    errors.append(f"{d}: estimators {rep['algorithms']}, expected {algos}")
                totals["rows_in"] += rep["rows_in"]
                totals["rows_out"] += rep["rows_out"]
                cut.update(rep["cut_by_reason"])
                n_chunks += rep["chunks"]
                for f in rep["files"]:
                    dst = tmp / f["path"]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(str(Path(d) / f["path"]), str(dst))
                    w.writerow([f["path"], f["rows"], f["row_groups"], f["bytes"], f["sha256"],
                                rep["batch"]])
                    n_files += 1
                    bytes_total += f["bytes"]
                    totals["rows_released"] += f["rows"]
                    if f.get("pixel"):
                        pixels.append(tuple(f["pixel"]))
        dups = 0
        for r in dedup_reports:
            rep = json.loads(Path(r).read_text())
            dups += rep["duplicate_ids"]
            totals["ids_checked"] += rep["ids"]
        if totals["rows_in"] != layout.n_objects:
            errors.append(f"{totals['rows_in']} input rows partitioned, the inputs hold "
                          f"{layout.n_objects}")
        if n_chunks != layout.n_chunks:
            errors.append(f"{n_chunks} chunks exported, the layout has {layout.n_chunks}")
        if totals["rows_in"] != totals["rows_out"] + sum(cut.values()):
            errors.append(f"rows_in {totals['rows_in']} != released {totals['rows_out']} + "
                          f"cut {sum(cut.values())}")
        if totals["rows_released"] != totals["rows_out"]:
            errors.append(f"{totals['rows_released']} rows in the release files, "
                          f"{totals['rows_out']} expected")
        if totals["ids_checked"] != totals["rows_out"]:
            errors.append(f"{totals['ids_checked']} ids checked for duplicates, "
                          f"{totals['rows_out']} released")
        if dups:
            errors.append(f"{dups} duplicate object ids")
        report = {"ok": not errors, "errors": errors, "objects_in": totals["rows_in"],
                  "objects_out": totals["rows_out"], "cut_by_reason": dict(sorted(cut.items())),
                  "duplicate_ids": dups, "ids_verified": True, "chunks": n_chunks,
                  "algorithms": sorted(algos)}
        if errors:
            raise PipelineError("object conservation check failed:\n  " + "\n  ".join(errors[:20]))
        write_json_atomic(tmp / "conservation.json", report)
        schema = schema_for(layout, algos, cfg)
        idc, ra, dec = _columns(cfg)
        models = {}
        for a, side in sorted(model_sidecars.items()):
            s = json.loads(Path(side).read_text())
            models[a] = {"sha256": s["model_sha256"], "rail_estimator": s.get("rail_estimator")}
        code = provenance.code_version()
        chash = config_hash(cfg)
        zg = zgrid_spec(cfg)
        if layout.is_hats:
            extra = {"pzpipe_release": cfg["release"], "pzpipe_config_hash": chash,
                     "pzpipe_code_version": f"{code['pzpipe']} {code['git_commit']}"
                                            f"{' dirty' if code['git_dirty'] else ''}",
                     "pzpipe_algorithms": " ".join(algos),
                     "pzpipe_zgrid": " ".join(str(v) for v in zg),
                     "pzpipe_pdf_encoding": pdfstore.ENCODING,
                     "pzpipe_manifest": "../manifest.json",
                     "hats_builder": f"pzpipe {code['pzpipe']}",
                     **{f"pzpipe_model_sha256_{a}": m["sha256"] for a, m in models.items()}}
            hatsio.write_catalog_files(tmp, pixels, schema, catalog_name=cfg["release"],
                                       total_rows=totals["rows_out"], ra_column=ra,
                                       dec_column=dec, extra_properties=extra)
        else:
            pq.write_metadata(schema, tmp / "dataset" / "_common_metadata")
        manifest = {
            "release": cfg["release"], "format": "hats" if layout.is_hats else "parquet",
            "code": code, "config_hash": chash, "config": cfg,
            "packages": provenance.package_versions(algorithms.packages()), "inputs": layout.describe(),
            "models": models, "zgrid": zg, "pdf_encoding": pdfstore.ENCODING,
            "pdf_reader": "pzpipe.release.read.to_ensemble(table, algo) -> qp.Ensemble "
                          "(pip install '<repository>[read]'; docs/pdf_format.md)",
            "rows": totals["rows_out"], "files": {"count": n_files, "bytes": bytes_total,
                                                  "list": "manifest_files.csv"},
            "pixels": len(pixels), "conservation": report,
            "columns": [f.name for f in schema],
        }
        from pzpipe.release.schema import column_dictionary, flag_bits

        info = {"release": cfg["release"], "n_rows": totals["rows_out"], "algorithms": list(algos),
                "id_column": idc, "ra_column": ra, "dec_column": dec, "hats": layout.is_hats,
                "zgrid": zg, "pdf_encoding": pdfstore.ENCODING,
                "columns": column_dictionary(schema), "flag_bits": flag_bits(cfg),
                "cut_by_reason": report["cut_by_reason"], "objects_in": totals["rows_in"],
                "code_version": code, "config_hash": chash, "n_files": n_files,
                "n_pixels": len(pixels)}
        # the release job (run_collection) turns these into manifest.json and README.md
        write_json_atomic(tmp / CATALOG_JSON, {"manifest": manifest, "readme": info})
    remove_leftover_temps(ids_files)
    log.info("release catalog %s: %d rows, %d files, %d pixels", out, totals["rows_out"],
             n_files, len(pixels))
    return manifest


# ---------------------------------------------------------------------------- collection
def _hash_rec(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": provenance.sha256_file(str(path))}


def input_description(layout: Layout, cfg: dict, input_catalog: str | None) -> dict:
    """What the input was, for the README: the HATS catalog's name and description
    (``obs_description``) and its ``SYNTHETIC.md`` if it has one, or the input files."""
    out = {"kind": layout.kind, "objects": layout.n_objects, "synthetic": False}
    files = cfg["inputs"].get("files")
    if files:
        out["files"] = list(files) if isinstance(files, (list, tuple)) else [files]
    if input_catalog and hatsio.is_hats(input_catalog) and not cfg["inputs"].get("hats"):
        input_catalog = None        # imported from inputs.files: describe the files
    if input_catalog and hatsio.is_hats(input_catalog):
        cat = Path(hatsio.catalog_dir(input_catalog))
        props = hatsio.read_properties(cat)
        out["catalog"] = cfg["inputs"].get("hats")
        out["name"] = props.get("obs_collection") or props.get("catalog_name")
        out["description"] = props.get("obs_description")
        for d in (cat, Path(input_catalog)):
            if (d / "SYNTHETIC.md").is_file():
                out["synthetic"] = True
                out["synthetic_note"] = (d / "SYNTHETIC.md").read_text()
                break
        if "SYNTHETIC" in (out.get("description") or "").upper():
            out["synthetic"] = True
    return out


def run_collection(layout: Layout, algos: list[str], cfg: dict, catalog_dir: str,
                   margin_dirs: list[str], index_dirs: list[str], out_dir: str, *,
                   sidecars: dict[str, str], models: dict[str, str],
                   data_dirs: dict[str, str] | None = None,
                   validation: dict[str, str] | None = None,
                   input_catalog: str | None = None, index_batch_files=()) -> dict:
    """The release folder (see the module docstring, step 4): one entry per file in
    memory, data files hard-linked (never copied when the filesystem allows links).
    ``index_batch_files``: the batches' sorted ids (``temp()``, consumed by the index
    buckets), removed once the release is in place if a kill left them."""
    from pzpipe.release import bundle
    from pzpipe.release.readme import render
    from pzpipe.stages import collection as coll

    cat = Path(catalog_dir)
    rec = json.loads((cat / CATALOG_JSON).read_text())
    manifest, info = rec["manifest"], rec["readme"]
    idc = info["id_column"]
    hats = bool(info["hats"])
    primary = coll.PRIMARY if hats else ""
    margin = coll.MARGIN if hats and margin_dirs else None
    index = coll.index_name(idc) if hats and index_dirs else None
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        pdir = tmp / primary if primary else tmp
        # 1. the photo-z catalog: its data files and catalog metadata
        n_files = bytes_total = 0
        fcsv = open(tmp / "manifest_files.csv", "w", newline="")
        w = csv.writer(fcsv)
        w.writerow(["path", "rows", "row_groups", "bytes", "sha256", "batch", "catalog"])
        for f in coll.read_file_list(cat):
            dst = pdir / f["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(str(cat / f["path"]), str(dst))
            w.writerow([f"{primary}/{f['path']}" if primary else f["path"], f["rows"],
                        f["row_groups"], f["bytes"], f["sha256"], f["batch"], "primary"])
            n_files += 1
            bytes_total += int(f["bytes"])
        for name in ("properties", "hats.properties", "partition_info.csv",
                     "dataset/_common_metadata"):
            if (cat / name).is_file():
                (pdir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cat / name, pdir / name)
        shutil.copyfile(cat / "conservation.json", tmp / "conservation.json")
        # 2. the margin catalog
        if margin:
            mdir = tmp / margin
            pixels, rows, thr = [], 0, None
            for d in margin_dirs:
                rep = json.loads((Path(d) / coll.REPORT).read_text())
                thr = rep["margin_arcsec"]
                for f in rep["files"]:
                    dst = mdir / f["path"]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(str(Path(d) / f["path"]), str(dst))
                    w.writerow([f"{margin}/{f['path']}", f["rows"], f["row_groups"], f["bytes"],
                                f["sha256"], rep["batch"], "margin"])
                    pixels.append(tuple(f["pixel"]))
                    rows += f["rows"]
                    n_files += 1
                    bytes_total += int(f["bytes"])
            coll.write_margin_metadata(mdir, sorted(pixels), pq.read_schema(
                cat / "dataset" / "_common_metadata"), total_rows=rows,
                ra_column=info["ra_column"], dec_column=info["dec_column"],
                margin_arcsec=thr if thr is not None else cfg["export"]["margin_arcsec"])
            manifest["margin"] = {"catalog": margin, "rows": rows, "pixels": len(pixels),
                                  "margin_arcsec": thr}
        # 3. the index catalog
        if index:
            idir = tmp / index
            rows = 0
            for d in index_dirs:
                rep = json.loads((Path(d) / coll.REPORT).read_text())
                for f in rep["files"]:
                    dst = idir / f["path"]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(str(Path(d) / f["local"]), str(dst))
                    w.writerow([f"{index}/{f['path']}", f["rows"], f["row_groups"], f["bytes"],
                                f["sha256"], "", "index"])
                    rows += f["rows"]
                    n_files += 1
                    bytes_total += int(f["bytes"])
            if rows != manifest["rows"]:
                raise PipelineError(f"id index: {rows} rows, the release has {manifest['rows']}")
            coll.write_index_metadata(idir, total_rows=rows, id_column=idc)
            manifest["index"] = {"catalog": index, "column": idc, "rows": rows,
                                 "files": len(index_dirs)}
        fcsv.close()
        if hats:
            coll.write_collection_properties(tmp, cfg["release"], margin=margin, index=index,
                                             id_column=idc)
        # 4. what makes the folder usable alone
        extra = bundle.write_bundle(tmp, cfg=cfg, algos=algos, zgrid=info["zgrid"],
                                    encoding=info["pdf_encoding"], sidecars=sidecars,
                                    models=models, data_dirs=data_dirs or {},
                                    validation=validation or {})
        for a in algos:
            r = json.loads((tmp / extra["estimators"][a] / "rail.json").read_text())
            manifest["models"][a]["rail_estimator"] = r["rail_estimator"]
            manifest["models"][a]["rail_informer"] = r["rail_informer"]
            manifest["models"][a]["config"] = f"{extra['estimators'][a]}/rail.json"
        inp = input_description(layout, cfg, input_catalog)
        manifest["input"] = inp
        manifest["collection"] = {"primary": primary, "margin": margin, "index": index}
        manifest["pdf_reader"] = ("decode_pdf.py (numpy; spec pdf_format.md), or "
                                  "pzpipe.release.read.to_ensemble(table, algo) -> qp.Ensemble")
        req = (validation or {}).get("requirements.md")
        info.update(collection=manifest["collection"], input=inp, bundle=extra,
                    margin=manifest.get("margin"), index=manifest.get("index"),
                    repository=cfg.get("repository") or None,
                    validation_md=Path(req).read_text() if req and os.path.isfile(req) else None,
                    provenance_files=["manifest.json", "manifest_files.csv",
                                      "conservation.json"]
                    + ([f"{primary}/properties", "collection.properties"] if hats else []))
        (tmp / "README.md").write_text(render(info))
        # 5. the manifest: data files in manifest_files.csv, every other file here
        manifest["files"] = {"count": n_files, "bytes": bytes_total, "list": "manifest_files.csv",
                             "list_bytes": (tmp / "manifest_files.csv").stat().st_size,
                             "list_sha256": provenance.sha256_file(str(tmp / "manifest_files.csv"))}
        data = set()
        with open(tmp / "manifest_files.csv", newline="") as f:
            for r in csv.DictReader(f):
                data.add(r["path"])
        meta = {}
        for root, dirs, fnames in os.walk(tmp):
            dirs.sort()
            for fn in sorted(fnames):
                rel = os.path.relpath(os.path.join(root, fn), tmp).replace(os.sep, "/")
                if rel in data or rel in ("manifest.json", "manifest_files.csv"):
                    continue
                meta[rel] = _hash_rec(Path(root) / fn)
        manifest["metadata_files"] = meta
        write_json_atomic(tmp / "manifest.json", manifest)
    remove_leftover_temps(index_batch_files)
    log.info("release %s: collection %s", out, manifest["collection"])
    return manifest
