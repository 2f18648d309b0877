"""Audit of a finished release: is what is published what the recorded run produced?

``run`` checks a release written by ``pzpipe.stages.export`` (a HATS collection whose
photo-z catalog is ``photoz/``, with its margin and id index, or a parquet dataset for
inputs without coordinates) and writes a report (markdown + JSON), one line per check
with PASS / FAIL / WARN and the reason. The manifest check covers every data file of the
collection (margin and index included) and every file of the folder; the other checks
concern the photo-z catalog (paths in their messages are relative to it). A receiver
without the pipeline checks a copy with ``pzpipe verify`` (pzpipe.release.verify):
sizes, sha256, rows and schemas of every file, numpy and pyarrow only.

1. ``manifest``      every file listed in ``manifest_files.csv`` (streamed) exists with
                     the recorded size and sha256; the list has ``manifest.json``'s file
                     count and bytes; no other file in the release (orphans, stray
                     parquet files, ``.tmp-`` leftovers) apart from the release metadata
                     (:data:`RELEASE_META`); ``conservation.json`` = the manifest's record.
2. ``catalog``       the catalog metadata agrees with the files: every release file has
                     the schema of ``dataset/_common_metadata`` (field metadata included),
                     whose columns are the ones the recorded config gives and whose
                     ``pzpipe`` metadata has the manifest's config hash and code version;
                     HATS: ``partition_info.csv`` lists exactly the pixels of the files,
                     ``properties`` has the manifest's row count, config hash, release
                     name, estimators and coordinate columns.
3. ``config``        the config in force now vs the recorded one (WARN if different: the
                     audit always uses the recorded config).
4. ``conservation``  object conservation re-checked batch by batch from the partition
                     files and the *release* files: the inputs still have the recorded
                     row counts (layout recomputed from the recorded config as the
                     workflow does; the input files' footers); per chunk
                     ``rows_in = rows_out + cut``; the release rows of every chunk (its
                     row group in its pixel file) have the partition's ids in the same
                     order; no id twice in the whole release; the totals equal the
                     manifest's.
5. ``models``        sha256 of every model now = ``manifest["models"]`` = its
                     ``model.json`` sidecar = the release's ``pzpipe_model_sha256_{algo}``
                     property (HATS) = the ``model_sha256`` of every estimate file of
                     that estimator (whose config hash is also checked).
6. ``recompute``     a seeded random sample of chunks per estimator is re-estimated from
                     the partition row group with the recorded config and the models
                     (``algorithms.Runner`` + ``estimate.estimate_table``, one BLAS
                     thread, exactly as the estimate workers do) and compared with the
                     release rows of that chunk - the chunk's row group of its pixel file
                     (``dataset/part-<batch>.parquet`` for inputs without coordinates) -
                     column by column (``{algo}_*`` vs the recomputed columns, the id
                     column vs ``object_id``), and the coordinates and spatial index with
                     the partition's. The comparison is bit for bit (NaN == NaN, PDF
                     bytes equal): every estimator is deterministic given its model
                     (``algorithms.Runner`` seeds per chunk the random generators RAIL
                     leaves unseeded), so no tolerance is accepted.
7. ``packages``      package versions now vs recorded in the manifest and the model
                     sidecars, and the code version (git commit, dirty flag). Differences
                     are WARN, not FAIL: a newer library may still reproduce the release,
                     and the ``recompute`` check says whether it does.

The audit FAILS (``PipelineError`` after the report is written, so the Snakemake rule
fails) when any check fails; WARN never fails it.

Paths come from the rule (``workflow/rules/audit.smk`` passes ``PATHS`` of
``rules/common.smk``: partition, model, sidecar and estimate templates, the imported
catalog, the estimators' prepared data directories); nothing here rebuilds a path under
``results/``.

Scale (40e9 objects, ~20k pixel files, ~2k batches, ~300k chunks), memory:
the manifest and catalog checks hold one entry per release file (a few MB); the
conservation check holds one batch at a time - its partition metadata and its ids
(8 B/object: 0.6 GB at 620 chunks of 130k objects) - and finds duplicate ids across the
whole release with the export's bijective-hash buckets (``export.mix64``,
``write_id_buckets``, ``run_dedup``): each batch's ids are written as sorted hashes into
``export.dedup_ids_per_job``-sized buckets in a scratch directory next to the report
(8 B/object on disk, removed at the end), then each bucket is checked alone (1.2 GB at
the default 1.5e8 ids per bucket). The same bucket code runs on the small test release
(one bucket) rather than an in-memory check, so that the path used at scale is the one
the tests exercise. The recompute check holds one chunk of one estimator. Time: the audit
reads every release byte once (sha256) and the id column of every partition and release
file once; it is one job, so at release scale its runtime is bounded by that read (~12 TB
of release files at ~0.5 GB/s is ~7 h) - give the rule the runtime, or audit a copy.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError
from pzpipe import algorithms as _algorithms
from pzpipe.run import provenance
from pzpipe.core.io import parquet_meta

log = logging.getLogger(__name__)

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"

COMPARISON = "bit for bit (no tolerance: NaN == NaN, compressed PDF bytes equal)"
# release metadata at the catalog root: not listed in manifest_files.csv, not orphans
RELEASE_META = ("manifest.json", "manifest_files.csv", "conservation.json", "README.md",
                "dataset/_common_metadata")
HATS_META = ("properties", "hats.properties", "partition_info.csv")
SNAKEMAKE_MARKERS = (".snakemake_timestamp",)     # written by Snakemake in directory() outputs
MAX_DETAILS = 40                                  # failures listed per check (the rest counted)
_PIXEL_RE = re.compile(r"^dataset/Norder=(\d+)/Dir=(\d+)/Npix=(\d+)\.parquet$")


@dataclass
class Inputs:
    """What the audit reads besides the release, as the workflow names it (``PATHS``)."""

    release: str
    partition: str              # template with {batch}
    model: str                  # template with {algo}
    sidecar: str                # template with {algo}
    estimate: str               # template with {algo} and {batch}
    objects_hats: str | None = None   # inputs.files imported as HATS (the layout's source)
    algo_data: str | None = None      # template with {algo}: prepared data directories

    @classmethod
    def from_paths(cls, paths: dict) -> "Inputs":
        return cls(paths["release"], paths["partition"], paths["model"], paths["sidecar"],
                   paths["estimate"], paths.get("objects_hats"), paths.get("algo_data"))

    def data_dir(self, algo: str) -> str | None:
        return self.algo_data.format(algo=algo) if self.algo_data else None

    def partition_file(self, batch: str) -> str:
        return self.partition.format(batch=batch)

    def model_file(self, algo: str) -> str:
        return self.model.format(algo=algo)

    def sidecar_file(self, algo: str) -> str:
        return self.sidecar.format(algo=algo)

    def estimate_file(self, algo: str, batch: str) -> str:
        return self.estimate.format(algo=algo, batch=batch)


class _Check:
    def __init__(self, name: str, what: str):
        self.name, self.what = name, what
        self.status = PASS
        self.details: list[str] = []
        self.failures: list[str] = []
        self.data: dict = {}
        self._more = 0

    def fail(self, msg: str):
        self.status = FAIL
        if len(self.failures) >= MAX_DETAILS:
            self._more += 1
            return
        self.details.append(msg)
        self.failures.append(msg)

    def warn(self, msg: str):
        if self.status == PASS:
            self.status = WARN
        self.details.append(msg)

    def info(self, msg: str):
        self.details.append(msg)

    def as_dict(self) -> dict:
        details = self.details + ([f"... and {self._more} more failure(s)"] if self._more else [])
        return {"check": self.name, "what": self.what, "status": self.status,
                "details": details, "failures": self.failures,
                **({"data": self.data} if self.data else {})}


# ----------------------------------------------------------------------------- helpers
def _release_root(release_dir: Path) -> Path:
    """The directory holding ``manifest_files.csv``: ``release_dir`` itself, or, for the
    photo-z catalog of a collection (``release/photoz``), its parent."""
    d = Path(release_dir)
    if not (d / "manifest_files.csv").is_file() and (d.parent / "manifest_files.csv").is_file():
        return d.parent
    return d


def manifest_files(release_dir: Path, catalog: str | None = "primary"):
    """Rows of ``manifest_files.csv`` (streamed): dicts with path, rows, row_groups, bytes,
    sha256, batch, catalog (``primary``, ``margin`` or ``index`` of the collection; None:
    every row). Paths relative to ``release_dir`` (the release, or the photo-z catalog
    inside it)."""
    root = _release_root(release_dir)
    pre = os.path.relpath(release_dir, root).replace(os.sep, "/")
    pre = "" if pre == "." else pre + "/"
    with open(root / "manifest_files.csv", newline="") as f:
        for r in csv.DictReader(f):
            cat = r.get("catalog") or "primary"
            if catalog is not None and cat != catalog:
                continue
            path = r["path"][len(pre):] if pre and r["path"].startswith(pre) else r["path"]
            yield {"path": path, "rows": int(r["rows"]),
                   "row_groups": int(r["row_groups"]), "bytes": int(r["bytes"]),
                   "sha256": r["sha256"], "batch": r["batch"], "catalog": cat}


def _files_by_batch(release_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for f in manifest_files(release_dir):
        out[f["batch"]].append(f)
    return dict(out)


def release_path(kind: str, chunk: dict, batch: str) -> str:
    """Release-relative path of the file holding a partition chunk's rows: its HATS pixel
    file, or the batch's file for inputs without coordinates."""
    if kind == "hats":
        from pzpipe.core.hatsio import pixel_file

        k, p = chunk["pixel"]
        return pixel_file("", k, p)
    return f"dataset/part-{batch}.parquet"


def chunk_locations(meta: dict, batch: str) -> list[tuple[dict, str, int | None]]:
    """``[(chunk record, release file, row group)]`` for a partition's chunks. A release
    file holds one row group per non-empty chunk, in chunk order; a chunk whose rows were
    all cut has no row group (None)."""
    seen: Counter = Counter()
    out = []
    for ch in meta["chunks"]:
        path = release_path(meta.get("kind", "files"), ch, batch)
        if ch["row_group"] is None:
            out.append((ch, path, None))
        else:
            out.append((ch, path, seen[path]))
            seen[path] += 1
    return out


def _bits(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """Float columns as their raw bit patterns (so NaN == NaN and -0.0 != 0.0)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_floating(col.type):
        arr = col.to_numpy(zero_copy_only=False)
        return arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    return None


def _identical(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    if a.type != b.type or len(a) != len(b):
        return False
    ba, bb = _bits(a), _bits(b)
    if ba is not None:
        na = a.combine_chunks().is_null().to_numpy(zero_copy_only=False)
        nb = b.combine_chunks().is_null().to_numpy(zero_copy_only=False)
        return bool(np.array_equal(ba, bb) and np.array_equal(na, nb))
    aa, bb2 = a.combine_chunks(), b.combine_chunks()
    if pa.types.is_list(aa.type) or pa.types.is_large_list(aa.type) or \
            pa.types.is_fixed_size_list(aa.type):
        # compare structure, then values bit for bit
        if not np.array_equal(aa.is_null().to_numpy(zero_copy_only=False),
                              bb2.is_null().to_numpy(zero_copy_only=False)):
            return False
        if not pa.types.is_fixed_size_list(aa.type):
            if aa.value_lengths().to_pylist() != bb2.value_lengths().to_pylist():
                return False
        return _identical(pa.chunked_array([aa.flatten()]), pa.chunked_array([bb2.flatten()]))
    return aa.equals(bb2)


def compare_tables(stored: pa.Table, recomputed: pa.Table,
                   zgrid: np.ndarray) -> tuple[bool, list[str], dict]:
    """(identical, differences, max |diff| per differing column) of a recomputed chunk vs
    the stored one. Identical = every column bit for bit; the max |diff| (decoded PDFs
    for the PDF column) only describes a difference."""
    diffs, stats = [], {}
    if stored.num_rows != recomputed.num_rows:
        return False, [f"{stored.num_rows} rows stored, {recomputed.num_rows} recomputed"], stats
    if stored.schema.names != recomputed.schema.names:
        return False, [f"columns differ: stored {stored.schema.names}, recomputed "
                       f"{recomputed.schema.names}"], stats
    for name in stored.schema.names:
        a, b = stored.column(name), recomputed.column(name)
        if _identical(a, b):
            continue
        if name == "pdf" and a.type == b.type:
            from pzpipe.release import pdfstore

            pa_, pb = (pdfstore.decode(x.combine_chunks(), zgrid) for x in (a, b))
            d = float(np.nanmax(np.abs(pa_ - pb))) if pa_.size else 0.0
        elif pa.types.is_floating(a.type) and a.type == b.type:
            x, y = (np.asarray(c.to_numpy(), dtype=np.float64) for c in (a, b))
            same_nan = np.isnan(x) == np.isnan(y)
            d = float(np.nanmax(np.abs(x - y))) if np.all(same_nan) and x.size else float("inf")
        else:
            d = float("inf")        # ids, flags, other types: must be identical
        stats[name] = d
        nbad = "?"
        try:
            ne = pa.compute.not_equal(a, b).combine_chunks().to_numpy(zero_copy_only=False)
            nbad = int(np.sum(ne))
        except Exception:  # noqa: BLE001 - binary/list columns or other types: count unknown
            pass
        diffs.append(f"column '{name}' differs ({nbad} rows, max |diff| {d:.3g})")
    return not diffs, diffs, stats


def _expected_schema(manifest: dict, cfg: dict, algos: list[str]) -> pa.Schema:
    """The release schema the recorded config gives (``export.schema_for`` with the
    manifest's config hash and code version). ``algos`` in the release's column order
    (the config's order, which the recorded config - JSON with sorted keys - lost)."""
    from pzpipe.release.schema import release_schema

    c = cfg["columns"]
    return release_schema(cfg, algos, id_column=c["id"],
                          ra_column=c["ra"] or None, dec_column=c["dec"] or None,
                          hats=manifest.get("format") == "hats",
                          extra_metadata={"config_hash": manifest.get("config_hash"),
                                          "code": manifest.get("code")})


# ----------------------------------------------------------------------------- checks
def check_manifest(release_dir: Path, manifest: dict) -> _Check:
    c = _Check("manifest", "every file listed in manifest_files.csv exists with the recorded "
                           "size and sha256; no unlisted file in the release")
    listed = set()
    bad = n_bytes = 0
    try:
        for f in manifest_files(release_dir, catalog=None):
            listed.add(f["path"])
            n_bytes += f["bytes"]
            p = release_dir / f["path"]
            if not p.is_file():
                c.fail(f"{f['path']}: listed in the manifest but missing")
                bad += 1
                continue
            size = p.stat().st_size
            sha = provenance.sha256_file(str(p))
            if size != f["bytes"] or sha != f["sha256"]:
                c.fail(f"{f['path']}: altered after the export (sha256 {sha[:12]}..., {size} "
                       f"bytes; the manifest records {f['sha256'][:12]}..., {f['bytes']} bytes)")
                bad += 1
    except (OSError, KeyError, ValueError) as exc:
        c.fail(f"manifest_files.csv is missing or unreadable ({type(exc).__name__}: {exc})")
    rec = manifest.get("files", {})
    if isinstance(rec, dict) and (rec.get("count"), rec.get("bytes")) != (len(listed), n_bytes):
        c.fail(f"manifest_files.csv lists {len(listed)} files of {n_bytes} bytes, manifest.json "
               f"records {rec.get('count')} files of {rec.get('bytes')} bytes")
    primary = (manifest.get("collection") or {}).get("primary") or ""
    pre = f"{primary}/" if primary else ""
    meta = tuple(m for m in RELEASE_META if not m.startswith("dataset/")) \
        + tuple(pre + m for m in RELEASE_META if m.startswith("dataset/")) \
        + (tuple(pre + m for m in HATS_META) if manifest.get("format") == "hats" else ()) \
        + (("collection.properties",) if primary else ())
    for m in meta:
        if not (release_dir / m).is_file():
            c.fail(f"{m}: release metadata file missing")
    orphans = []
    for root, dirs, files in os.walk(release_dir):
        base = Path(root).relative_to(release_dir)
        for d in [d for d in dirs if ".tmp-" in d]:       # an interrupted directory write
            orphans.append(str(base / d))
            dirs.remove(d)
        for name in files:
            rel = str(base / name)
            if rel not in listed and rel not in meta and rel not in SNAKEMAKE_MARKERS \
                    and rel not in (manifest.get("metadata_files") or {}):
                orphans.append(rel)
    for o in sorted(orphans):
        c.fail(f"{o}: in the release directory but not in the manifest"
               + (" (temporary file of an interrupted write)" if ".tmp-" in o else ""))
    cons_path = release_dir / "conservation.json"
    if cons_path.exists():
        try:
            if json.loads(cons_path.read_text()) != manifest.get("conservation"):
                c.fail("conservation.json differs from the manifest's 'conservation' record")
        except json.JSONDecodeError as exc:
            c.fail(f"conservation.json is not valid JSON ({exc})")
    c.data = {"files": len(listed), "bytes": n_bytes, "bad": bad, "orphans": len(orphans)}
    if c.status == PASS:
        c.info(f"{len(listed)} files ({n_bytes} bytes), sha256 and sizes match; no other file "
               f"than the release metadata")
    return c


def check_catalog(release_dir: Path, manifest: dict, cfg: dict) -> _Check:
    from pzpipe.core.hatsio import _read_properties_file, read_partition_info

    hats = manifest.get("format") == "hats"
    c = _Check("catalog", "every release file has the schema of dataset/_common_metadata, "
                          "which has the recorded config's columns"
               + ("; partition_info.csv and properties agree with the files and the manifest"
                  if hats else ""))
    common_path = release_dir / "dataset" / "_common_metadata"
    try:
        common = pq.read_schema(common_path)
    except (OSError, pa.ArrowException) as exc:
        c.fail(f"cannot read {common_path.relative_to(release_dir)} ({exc})")
        return c
    from pzpipe.run.config import enabled_algorithms

    md = parquet_meta(common)
    order = md.get("algorithms") or []
    if sorted(order) != sorted(enabled_algorithms(cfg)):
        c.fail(f"dataset/_common_metadata holds estimators {order}, the recorded config "
               f"enables {sorted(enabled_algorithms(cfg))}")
        order = enabled_algorithms(cfg)
    expected = _expected_schema(manifest, cfg, order)
    if [(f.name, f.type) for f in common] != [(f.name, f.type) for f in expected]:
        have = {f.name: f.type for f in common}
        want = {f.name: f.type for f in expected}
        diff = sorted(set(have.items()) ^ set(want.items()), key=str)
        c.fail(f"dataset/_common_metadata columns differ from the recorded config's release "
               f"columns: {[f'{n}: {t}' for n, t in diff][:8] or 'same columns, other order'}")
    else:
        for key in ("config_hash", "code"):
            if md.get(key) != manifest.get(key):
                c.fail(f"dataset/_common_metadata records {key} {str(md.get(key))[:40]}, the "
                       f"manifest {str(manifest.get(key))[:40]}")
        if not common.equals(expected, check_metadata=True):
            c.warn("dataset/_common_metadata's field descriptions differ from what the current "
                   "code writes (the code changed since the release)")
    pixels = set()
    n = 0
    try:
        for f in manifest_files(release_dir):
            p = release_dir / f["path"]
            if not p.is_file():
                continue                  # reported by the manifest check
            n += 1
            if hats:
                m = _PIXEL_RE.match(f["path"])
                if not m or (int(m.group(3)) // 10_000) * 10_000 != int(m.group(2)):
                    c.fail(f"{f['path']}: not a HATS pixel file path")
                else:
                    pixels.add((int(m.group(1)), int(m.group(3))))
            try:
                s = pq.read_schema(p)
            except (OSError, pa.ArrowException) as exc:
                c.fail(f"{f['path']}: not a readable parquet file ({exc})")
                continue
            if not s.equals(common, check_metadata=True):
                what = "columns" if s.names != common.names or not s.equals(common) else \
                    "field/schema metadata"
                c.fail(f"{f['path']}: its {what} differ from dataset/_common_metadata")
    except (OSError, KeyError, ValueError) as exc:
        c.fail(f"manifest_files.csv is missing or unreadable ({exc})")
    if hats:
        try:
            info = set(read_partition_info(release_dir))
            if info != pixels:
                c.fail(f"partition_info.csv lists {len(info)} pixels, the release files are "
                       f"{len(pixels)} pixels; differing: "
                       f"{sorted(info ^ pixels)[:8]} (a reader would miss or expect them)")
            if manifest.get("pixels") != len(info):
                c.fail(f"partition_info.csv lists {len(info)} pixels, the manifest records "
                       f"{manifest.get('pixels')}")
        except (PipelineError, OSError) as exc:
            c.fail(str(exc))
        want = {"hats_nrows": str(manifest.get("rows")),
                "pzpipe_config_hash": manifest.get("config_hash"),
                "pzpipe_release": manifest.get("release"),
                "hats_col_ra": cfg["columns"]["ra"], "hats_col_dec": cfg["columns"]["dec"]}
        texts = {}
        for name in ("hats.properties", "properties"):      # readers use either
            if not (release_dir / name).is_file():
                continue                                     # reported by the manifest check
            texts[name] = (release_dir / name).read_bytes()
            props = _read_properties_file(release_dir / name)
            for k, v in want.items():
                if props.get(k) != v:
                    c.fail(f"{name}: {k} = {props.get(k)!r}, expected {v!r}")
            algos = sorted((props.get("pzpipe_algorithms") or "").split())
            if algos != sorted(manifest.get("models", {})):
                c.fail(f"{name}: pzpipe_algorithms {algos}, the manifest's models "
                       f"{sorted(manifest.get('models', {}))}")
        if len(set(texts.values())) > 1:
            c.fail("hats.properties differs from properties")
    c.data = {"files": n, "pixels": len(pixels) if hats else None}
    if c.status != FAIL:
        c.info(f"{n} files with the catalog schema ({len(common)} columns)"
               + (f"; {len(pixels)} pixels = partition_info.csv; properties match" if hats else ""))
    return c


def _layout(manifest: dict, cfg: dict, inputs: Inputs, c: _Check):
    """The layout recomputed from the recorded config as the workflow does (the imported
    catalog for inputs.files with coordinates); None (WARN) when the inputs are gone."""
    from pzpipe.run.layout import import_enabled, make_layout

    try:
        imported = inputs.objects_hats if import_enabled(cfg) else None
        layout = make_layout(cfg, imported=imported)
    except PipelineError as exc:
        c.warn(f"the inputs are not readable ({exc}); the input row counts were not checked, "
               f"the partition's bookkeeping and the manifest's totals were")
        return None
    rec = manifest.get("inputs", {})
    now = layout.describe()
    changed = {k: (rec.get(k), now[k]) for k in ("kind", "n_units", "n_objects", "chunk_rows",
                                                 "chunks", "chunks_per_batch", "batches")
               if rec.get(k) != now[k]}
    if changed:
        c.fail("the inputs changed since the release: "
               + ", ".join(f"{k} recorded {a}, now {b}" for k, (a, b) in changed.items()))
    return layout


def _check_input_units(layout, batch: str, cfg: dict, c: _Check) -> None:
    """The batch's input files (pixel files) still hold the rows their metadata said."""
    from pzpipe.run.layout import file_rows

    units = {}
    for ch in layout.batch_chunks(batch):
        units.setdefault(ch.file, ch.file_rows)
    for path, rows in units.items():
        try:
            n = file_rows(path, cfg["inputs"].get("hdf5_group", "photometry"))
        except PipelineError as exc:
            c.fail(f"batch {batch}: {exc}")
            continue
        if n != rows:
            c.fail(f"batch {batch}: input '{path}' holds {n} rows, the recorded layout {rows} "
                   f"(the input changed since the release)")


def _check_batch(batch: str, pfile: str, files: list[dict], release_dir: Path, id_column: str,
                 layout, cfg: dict, c: _Check, totals: Counter, cut: Counter) -> np.ndarray:
    """Conservation of one batch; returns its ids as released (in release order)."""
    from pzpipe.stages.partition import ID_COL, read_meta

    meta = read_meta(pfile)
    if meta.get("batch") != batch:
        c.fail(f"{pfile}: partition of batch {meta.get('batch')}, expected {batch}")
    chunks = meta["chunks"]
    if layout is not None:
        exp = layout.batch_chunks(batch)
        got = [(ch["chunk"], ch["rows_in"], tuple(ch["pixel"]) if ch.get("pixel") else None)
               for ch in chunks]
        want = [(e.index, e.rows, e.pixel) for e in exp]
        if got != want:
            c.fail(f"batch {batch}: partition chunks (index, rows in, pixel) {got[:4]}..., the "
                   f"recorded layout has {want[:4]}...")
        _check_input_units(layout, batch, cfg, c)
    for ch in chunks:
        ncut = sum(ch["cut"].values())
        if ch["rows_in"] != ch["rows_out"] + ncut:
            c.fail(f"batch {batch} chunk {ch['chunk']}: rows_in {ch['rows_in']} != rows_out "
                   f"{ch['rows_out']} + cut {ncut}")
        if (ch["row_group"] is None) != (ch["rows_out"] == 0):
            c.fail(f"batch {batch} chunk {ch['chunk']}: {ch['rows_out']} rows out but row group "
                   f"{ch['row_group']}")
        totals["rows_in"] += ch["rows_in"]
        totals["rows_out"] += ch["rows_out"]
        totals["chunks"] += 1
        cut.update(ch["cut"])
    locs = chunk_locations(meta, batch)
    by_file: dict[str, list] = {}
    for ch, path, rg in locs:
        if rg is not None:
            by_file.setdefault(path, []).append((ch, rg))
    listed = {f["path"]: f for f in files}
    for path in sorted(set(listed) - set(by_file)):
        c.fail(f"{path}: listed for batch {batch}, but no chunk of the partition {pfile} is in it")
    ppf = pq.ParquetFile(pfile)
    ids_out = []
    for path, entries in by_file.items():
        if path not in listed:
            c.fail(f"batch {batch}: {len(entries)} chunk(s) belong in {path}, which the manifest "
                   f"does not list")
            continue
        p = release_dir / path
        try:
            rf = pq.ParquetFile(p)
        except (OSError, pa.ArrowException) as exc:
            c.fail(f"{path}: cannot read ({exc})")
            continue
        md = rf.metadata
        rows = sum(ch["rows_out"] for ch, _ in entries)
        if md.num_row_groups != len(entries) or md.num_rows != rows:
            c.fail(f"{path}: {md.num_rows} rows in {md.num_row_groups} row groups, the partition "
                   f"of batch {batch} has {rows} rows in {len(entries)} chunks for it")
        if (listed[path]["rows"], listed[path]["row_groups"]) != (md.num_rows, md.num_row_groups):
            c.fail(f"{path}: {md.num_rows} rows / {md.num_row_groups} row groups, manifest_files"
                   f".csv records {listed[path]['rows']} / {listed[path]['row_groups']}")
        totals["rows_released"] += md.num_rows
        for ch, rg in entries:
            pid = ppf.read_row_group(ch["row_group"], columns=[ID_COL]).column(0).to_numpy()
            where = f"{path} row group {rg} (batch {batch} chunk {ch['chunk']})"
            if len(pid) != ch["rows_out"]:
                c.fail(f"{pfile} chunk {ch['chunk']}: {len(pid)} rows, its metadata says "
                       f"{ch['rows_out']}")
            if rg >= md.num_row_groups:
                c.fail(f"{where}: missing, the file has {md.num_row_groups} row groups")
                continue
            rid = rf.read_row_group(rg, columns=[id_column]).column(0).to_numpy()
            ids_out.append(rid)
            if len(rid) != len(pid):
                c.fail(f"{where}: {len(rid)} rows, partition has {len(pid)}")
            elif not np.array_equal(rid, pid):
                c.fail(f"{where}: object ids differ from the partition's "
                       f"({int(np.sum(rid != pid))} of {len(pid)} rows)")
    return np.concatenate(ids_out) if ids_out else np.zeros(0, np.int64)


def check_conservation(release_dir: Path, manifest: dict, cfg: dict, inputs: Inputs,
                       batches: list[str], work_dir: str) -> _Check:
    from pzpipe.stages import export
    from pzpipe.run.layout import batch_id

    c = _Check("conservation", "every input object exactly once (kept or cut by reason), "
                               "release rows = partition rows per chunk (same ids, same "
                               "order), ids unique in the release; totals = manifest")
    layout = _layout(manifest, cfg, inputs, c)
    n_rec = manifest.get("inputs", {}).get("batches")
    recorded = [batch_id(i) for i in range(int(n_rec or 0))]
    if list(batches) != recorded:
        c.fail(f"the audit was given {len(batches)} batches ({batches[:3]}...), the release "
               f"records {n_rec}")
    try:
        by_batch = _files_by_batch(release_dir)
    except (OSError, KeyError, ValueError) as exc:
        c.fail(f"manifest_files.csv is missing or unreadable ({exc})")
        return c
    idc = cfg["columns"]["id"]
    n_obj = max(1, int(manifest.get("inputs", {}).get("n_objects") or 0))
    k = export.n_buckets(int(n_obj), cfg["export"]["dedup_ids_per_job"])
    totals, cut = Counter(), Counter()
    work = Path(work_dir)
    from pzpipe.core.io import remove_stale_tmp, tmp_name

    remove_stale_tmp(work)
    tmp = Path(tmp_name(work))
    (tmp / "ids").mkdir(parents=True)
    dups = 0
    try:
        id_files = []
        for b in batches:
            pfile = inputs.partition_file(b)
            try:
                ids = _check_batch(b, pfile, by_batch.pop(b, []), release_dir, idc, layout, cfg,
                                   c, totals, cut)
            except (PipelineError, OSError, pa.ArrowException, KeyError) as exc:
                c.fail(f"batch {b}: cannot check ({type(exc).__name__}: {exc})")
                continue
            id_files.append(str(tmp / "ids" / f"{b}.parquet"))
            export.write_id_buckets(ids, k, id_files[-1])
            del ids
        for b, files in sorted(by_batch.items()):
            c.fail(f"manifest_files.csv lists {len(files)} file(s) of batch {b}, which is not a "
                   f"batch of the release")
        for j in range(k):
            try:
                export.run_dedup(id_files, j, str(tmp / f"dedup-{j}.json"))
            except PipelineError as exc:
                dups += int(str(exc).split()[0])
                c.fail(f"hash bucket {j}: {str(exc).split(': the input')[0]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep = {"objects_in": totals["rows_in"], "objects_out": totals["rows_out"],
           "cut_by_reason": dict(sorted(cut.items())), "duplicate_ids": dups,
           "chunks": totals["chunks"]}
    rec = manifest.get("conservation", {})
    for key, val in rep.items():
        if val != rec.get(key):
            c.fail(f"{key} = {val} now, the manifest records {rec.get(key)}")
    if totals["rows_released"] != totals["rows_out"]:
        c.fail(f"{totals['rows_released']} rows in the release files, {totals['rows_out']} "
               f"kept by the partition")
    if manifest.get("rows") != totals["rows_released"]:
        c.fail(f"{totals['rows_released']} rows in the release files, the manifest records "
               f"{manifest.get('rows')}")
    if layout is not None and layout.n_objects != totals["rows_in"]:
        c.fail(f"{totals['rows_in']} input rows partitioned, the inputs hold {layout.n_objects}")
    c.data = {**rep, "batches": len(batches), "id_buckets": k}
    if c.status != FAIL:
        c.info(f"{rep['objects_in']} objects in = {rep['objects_out']} out + "
               f"{sum(cut.values())} cut {rep['cut_by_reason']}; {len(batches)} batches, "
               f"{rep['chunks']} chunks, ids checked per chunk; no duplicate id "
               f"({k} hash bucket(s))")
    return c


def check_models(release_dir: Path, manifest: dict, cfg: dict, inputs: Inputs,
                 batches: list[str]) -> _Check:
    from pzpipe.run.config import config_hash, enabled_algorithms
    from pzpipe.stages.estimate import CONFIG_SECTIONS

    c = _Check("models", "model sha256 now = manifest = model.json sidecar = release "
                         "properties = model_sha256 of every estimate file")
    models = manifest.get("models", {})
    algos = enabled_algorithms(cfg)
    if sorted(models) != sorted(algos):
        c.fail(f"the manifest records models for {sorted(models)}, the recorded config enables "
               f"{sorted(algos)}")
    props = {}
    if manifest.get("format") == "hats":
        from pzpipe.core.hatsio import read_properties

        try:
            props = read_properties(release_dir)
        except PipelineError as exc:
            c.fail(str(exc))
    est_hash = config_hash(cfg, list(CONFIG_SECTIONS))
    for algo, rec in sorted(models.items()):
        path = inputs.model_file(algo)
        if not os.path.exists(path):
            c.fail(f"{algo}: model '{path}' is missing")
            continue
        sha = provenance.sha256_file(path)
        if sha != rec["sha256"]:
            c.fail(f"{algo}: model '{path}' sha256 {sha[:16]}... differs from the manifest's "
                   f"{rec['sha256'][:16]}... (the model was replaced or retrained)")
        side = inputs.sidecar_file(algo)
        if os.path.exists(side):
            s = json.loads(Path(side).read_text()).get("model_sha256")
            if s != sha:
                c.fail(f"{algo}: sidecar {side} records model_sha256 {str(s)[:16]}..., the "
                       f"model file has {sha[:16]}...")
        else:
            c.fail(f"{algo}: no sidecar {side}")
        if props:
            p = props.get(f"pzpipe_model_sha256_{algo}")
            if p != rec["sha256"]:
                c.fail(f"{algo}: the release's properties record pzpipe_model_sha256_{algo} "
                       f"{str(p)[:16]}..., the manifest {rec['sha256'][:16]}...")
        wrong, other_cfg, missing = [], [], []
        for b in batches:
            f = inputs.estimate_file(algo, b)
            if not os.path.exists(f):
                missing.append(b)
                continue
            md = parquet_meta(f)
            if md.get("model_sha256") != rec["sha256"]:
                wrong.append(b)
            if md.get("config_hash") != est_hash:
                other_cfg.append(b)
        if missing:
            c.fail(f"{algo}: estimate files of batches {missing[:5]} are missing "
                   f"({inputs.estimate})")
        if wrong:
            c.fail(f"{algo}: the estimates of batches {wrong[:5]} were made with a model other "
                   f"than the manifest's")
        if other_cfg:
            c.fail(f"{algo}: the estimates of batches {other_cfg[:5]} were made with another "
                   f"config than the recorded one")
    if c.status == PASS:
        c.info(f"{len(models)} models match (sidecars, properties, estimate files of "
               f"{len(batches)} batches)")
    return c


def _nonempty_chunks(inputs: Inputs, batches: list[str]) -> list[int]:
    from pzpipe.stages.partition import read_meta

    return [sum(1 for ch in read_meta(inputs.partition_file(b))["chunks"]
                if ch["row_group"] is not None) for b in batches]


def check_recompute(release_dir: Path, manifest: dict, cfg: dict, inputs: Inputs,
                    batches: list[str], sample_chunks: int = 2, seed: int = 0,
                    max_rows: int | None = None) -> _Check:
    from pzpipe import algorithms
    from pzpipe.stages import estimate
    from pzpipe.run.config import enabled_algorithms
    from pzpipe.core.zgrid import from_config as make_zgrid
    from pzpipe.core.hatsio import HEALPIX_COL
    from pzpipe.stages.partition import ID_COL, read_meta

    c = _Check("recompute", f"{sample_chunks} random chunk(s) per estimator (seed {seed}) "
                            f"re-estimated from the partition with the recorded config and "
                            f"models, compared {COMPARISON} with the release rows")
    try:
        counts = _nonempty_chunks(inputs, batches)
    except (PipelineError, OSError, pa.ArrowException) as exc:
        c.fail(f"cannot read the partition files ({exc})")
        return c
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(starts[-1])
    bits = int(cfg["estimate"]["pdf_bits"])
    zg = make_zgrid(cfg)
    idc = cfg["columns"]["id"]
    coords = [(cfg["columns"]["ra"], "ra"), (cfg["columns"]["dec"], "dec")] \
        if cfg["columns"]["ra"] else []
    if manifest.get("format") == "hats":
        coords.append((HEALPIX_COL, HEALPIX_COL))
    rng = np.random.default_rng(seed)
    metas: dict[str, list] = {}
    c.data = {"seed": seed, "sample_chunks": sample_chunks, "max_rows": max_rows,
              "comparison": "bit-identical", "chunks": {}}
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(1)
    except ImportError:  # pragma: no cover
        limiter = None
    try:
        for algo in sorted(enabled_algorithms(cfg)):
            k = min(sample_chunks, total)
            pick = sorted(rng.choice(total, k, replace=False).tolist()) if k else []
            sample = []
            for i in pick:
                bi = int(np.searchsorted(starts, i, side="right")) - 1
                b = batches[bi]
                if b not in metas:
                    pfile = inputs.partition_file(b)
                    metas[b] = [x for x in chunk_locations(read_meta(pfile), b) if x[2] is not None]
                sample.append((b, *metas[b][i - int(starts[bi])]))
            c.data["chunks"][algo] = [ch["chunk"] for _, ch, _, _ in sample]
            if not sample:
                continue
            model = inputs.model_file(algo)
            try:
                runner = algorithms.Runner(algorithms.get(algo), model, cfg, name="audit",
                                           data_dir=inputs.data_dir(algo))
            except Exception as exc:  # noqa: BLE001 - any failure to load is a failed check
                c.fail(f"{algo}: cannot load model '{model}' ({type(exc).__name__}: {exc})")
                continue
            for b, ch, path, rg in sample:
                chunk = ch["chunk"]
                pfile = inputs.partition_file(b)
                where = f"{algo} chunk {chunk} ({path} row group {rg})"
                data = estimate._read_row_group(pfile, ch["row_group"])
                flags = data.pop("flags")
                try:
                    rf = pq.ParquetFile(release_dir / path)
                    if rg >= rf.metadata.num_row_groups:
                        c.fail(f"{where}: the release file has only "
                               f"{rf.metadata.num_row_groups} row groups")
                        continue
                    names = estimate.output_schema(runner.algo, zg).names
                    cols = [idc] + [f"{algo}_{n}" for n in names[1:]]
                    stored = rf.read_row_group(rg, columns=cols + [x for x, _ in coords])
                except (OSError, pa.ArrowException, KeyError) as exc:
                    c.fail(f"{where}: cannot read the release rows ({type(exc).__name__}: {exc})")
                    continue
                for rel_col, part_col in coords:
                    if len(stored) == len(data[ID_COL]) and not _identical(
                            stored.column(rel_col), pa.chunked_array([data[part_col]])):
                        c.fail(f"{where}: column '{rel_col}' differs from the partition's")
                stored = stored.select(cols).rename_columns(names)
                # a prefix of the chunk gives the same results for per-object estimators;
                # chunk-coupled ones (DNF) are always recomputed whole
                if max_rows and not getattr(algorithms.get(algo), "chunk_coupled", False):
                    data = {key: v[:max_rows] for key, v in data.items()}
                    flags = flags[:max_rows]
                    stored = stored.slice(0, max_rows)
                try:
                    # exactly what estimate._work does in an estimate worker
                    new = estimate.estimate_table(runner, data, flags, chunk, bits,
                                                  cfg["estimate"]["subchunk_rows"])
                except Exception as exc:  # noqa: BLE001
                    c.fail(f"{where}: re-estimation failed ({type(exc).__name__}: {exc})")
                    continue
                ok, diffs, _ = compare_tables(stored.replace_schema_metadata(None),
                                              new.replace_schema_metadata(None), zg)
                where = f"{where[:-1]}, {new.num_rows} objects)"
                if ok:
                    c.info(f"{where}: identical")
                else:
                    c.fail(f"{where}: recomputed output differs from the release: "
                           + "; ".join(diffs))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    return c


def check_config(manifest: dict, current_cfg: dict | None) -> _Check:
    from pzpipe.run.config import config_hash

    c = _Check("config", "config in force now vs the config recorded in the manifest")
    rec = manifest.get("config")
    if rec is None:
        c.fail("the manifest records no config")
        return c
    if config_hash(rec) != manifest.get("config_hash"):
        c.fail(f"the manifest's config does not hash to its config_hash "
               f"{str(manifest.get('config_hash'))[:16]}...: the manifest was edited")
    if current_cfg is not None:
        now = config_hash(current_cfg)
        if now != manifest.get("config_hash"):
            diff = sorted(k for k in set(rec) | set(current_cfg)
                          if json.dumps(rec.get(k), sort_keys=True, default=str)
                          != json.dumps(current_cfg.get(k), sort_keys=True, default=str))
            c.warn(f"the current config differs from the recorded one in {diff}; the audit "
                   f"used the recorded config")
    if c.status == PASS:
        c.info(f"config_hash {manifest.get('config_hash', '')[:16]}...")
    return c


def check_packages(manifest: dict, inputs: Inputs, algos: list[str]) -> _Check:
    c = _Check("packages", "package and code versions now vs recorded (differences are "
                           "WARN, not FAIL: the recompute check shows whether they matter)")
    now = provenance.package_versions(_algorithms.packages())
    rec = manifest.get("packages", {})
    diff = {k: (rec.get(k), now.get(k)) for k in sorted(set(rec) | set(now))
            if rec.get(k) != now.get(k)}
    for k, (a, b) in diff.items():
        c.warn(f"{k}: recorded {a}, now {b}")
    for algo in sorted(algos):
        side = Path(inputs.sidecar_file(algo))
        if side.exists():
            sp = json.loads(side.read_text()).get("packages", {})
            d = sorted(k for k in sp if sp.get(k) != rec.get(k))
            if d:
                c.warn(f"{algo}: model trained with different versions of {d} than the export")
    code_rec = manifest.get("code", {})
    code_now = provenance.code_version()
    if code_rec.get("git_dirty"):
        c.warn(f"the release was made from a checkout with uncommitted changes "
               f"(commit {code_rec.get('git_commit')}, dirty)")
    if code_rec.get("git_commit") != code_now.get("git_commit") or \
            code_rec.get("pzpipe") != code_now.get("pzpipe"):
        c.warn(f"code version: recorded {code_rec}, now {code_now}")
    c.data = {"differences": {k: list(v) for k, v in diff.items()}, "code_recorded": code_rec,
              "code_now": code_now}
    if c.status == PASS:
        c.info(f"{len(now)} packages and the code version ({code_now.get('git_commit')}) "
               f"match")
    return c


# ----------------------------------------------------------------------------- report
def to_markdown(report: dict) -> str:
    lines = [f"# Audit of release `{report['release']}`: {report['status']}", "",
             f"Release directory: `{report['release_dir']}`  ",
             f"Recorded config_hash: `{report.get('config_hash')}`  ",
             f"Recompute sample: {report['sample_chunks']} chunk(s) per estimator, seed "
             f"{report['seed']}; compared {COMPARISON}: bit-identical or FAIL", "",
             "| check | status | what |", "|---|---|---|"]
    for ch in report["checks"]:
        lines.append(f"| {ch['check']} | **{ch['status']}** | {ch['what']} |")
    lines.append("")
    for ch in report["checks"]:
        lines.append(f"## {ch['check']}: {ch['status']}")
        lines.append("")
        lines += [f"- {d}" for d in ch["details"]] or ["- (no details)"]
        lines.append("")
    return "\n".join(lines)


def audit(inputs: Inputs, batches: list[str], work_dir: str, current_cfg: dict | None = None,
          sample_chunks: int = 2, seed: int = 0, max_rows: int | None = None) -> dict:
    """Run every check and return the report dict (only scratch files are written, under
    a temporary name next to ``work_dir``, and removed)."""
    rdir = Path(inputs.release)
    checks: list[_Check] = []
    cat = rdir
    man_path = rdir / "manifest.json"
    try:
        manifest = json.loads(man_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        c = _Check("manifest", "manifest.json exists and is readable")
        c.fail(f"cannot read {man_path}: {exc}")
        checks.append(c)
        manifest = None
    algos: list[str] = []
    if manifest is not None:
        from pzpipe.run.config import enabled_algorithms, validate_config

        checks.append(check_manifest(rdir, manifest))
        primary = (manifest.get("collection") or {}).get("primary")
        cat = rdir / primary if primary else rdir     # the photo-z catalog of the collection
        try:
            cfg = validate_config(manifest["config"])
        except (PipelineError, KeyError) as exc:
            c = _Check("recorded-config", "the recorded config is valid")
            c.fail(f"the manifest's config is not valid: {exc}")
            checks.append(c)
            cfg = None
        if cfg is not None:
            algos = enabled_algorithms(cfg)
            checks.append(check_catalog(cat, manifest, cfg))
        checks.append(check_config(manifest, current_cfg))
        if cfg is not None:
            checks.append(check_conservation(cat, manifest, cfg, inputs, batches, work_dir))
            checks.append(check_models(cat, manifest, cfg, inputs, batches))
            checks.append(check_recompute(cat, manifest, cfg, inputs, batches, sample_chunks,
                                          seed, max_rows))
        checks.append(check_packages(manifest, inputs, algos))
    status = FAIL if any(c.status == FAIL for c in checks) else PASS
    return {"status": status, "release": (manifest or {}).get("release"),
            "release_dir": str(inputs.release), "config_hash": (manifest or {}).get("config_hash"),
            "sample_chunks": sample_chunks, "seed": seed, "max_rows": max_rows,
            "comparison": COMPARISON, "checks": [c.as_dict() for c in checks],
            "packages_now": provenance.package_versions(_algorithms.packages()),
            "code_now": provenance.code_version()}


def run(inputs: Inputs, batches: list[str], out_md: str, out_json: str,
        current_cfg: dict | None = None, sample_chunks: int = 2, seed: int = 0,
        max_rows: int | None = None, raise_on_fail: bool = True,
        report_copy: str | None = None) -> dict:
    """Audit ``inputs.release``, write ``out_md`` and ``out_json``; raise PipelineError when
    a check FAILS (after writing the report, its copy ``report_copy`` and logging it).

    Snakemake deletes the outputs of a failed job: ``report_copy`` (a ``log:`` file of
    the rule) keeps the markdown report of a failed audit. Scratch files (id hash
    buckets) go to a temporary directory next to ``out_json``."""
    from pzpipe.core.io import atomic_path, write_json_atomic

    work = str(Path(out_json).with_name("id-buckets"))
    report = audit(inputs, batches, work, current_cfg, sample_chunks, seed, max_rows)
    md = to_markdown(report)
    with atomic_path(out_md) as tmp:
        Path(tmp).write_text(md + "\n")
    write_json_atomic(out_json, report)
    if report_copy:
        with atomic_path(report_copy) as tmp:
            Path(tmp).write_text(md + "\n")
    log.info("audit report:\n%s", md)
    if report["status"] == FAIL and raise_on_fail:
        failed = [f"{c['check']}: {c['failures'][0]}"
                  + (f" (+{len(c['failures']) - 1} more)" if len(c["failures"]) > 1 else "")
                  for c in report["checks"] if c["status"] == FAIL]
        raise PipelineError(f"audit of '{inputs.release}' FAILED - " + " | ".join(failed)
                            + f". Full report: {report_copy or out_md}")
    return report


def run_release(paths: dict, batches: list[str], cfg: dict, out_md: str, out_json: str,
                report_copy: str | None = None) -> dict:
    """Rule entry point: audit the release with the workflow's paths (``PATHS`` of
    ``rules/common.smk``) and the batches of its layout.

    Sample size and seed come from the config section ``audit`` (``sample_chunks``,
    ``seed``, ``max_rows``)."""
    a = cfg.get("audit") or {}
    return run(Inputs.from_paths(paths), list(batches), out_md, out_json, current_cfg=cfg,
               sample_chunks=int(a.get("sample_chunks", 2)), seed=int(a.get("seed", 0)),
               max_rows=a.get("max_rows"), report_copy=report_copy)
