"""Export stage: the release catalog, its manifest, and the object-conservation check.

The release is ``<release_dir>/<algo>/<batch>.parquet`` (hard links to the estimate
files when possible: no copy of the data), ``conservation.json`` and ``manifest.json``.
The export fails (and leaves no release directory) unless every input object is
accounted for exactly once: ``rows_in = rows_out + cut`` for every chunk, every
algorithm has exactly the partition's rows per chunk, the same object ids in the same
order, and ids are unique across the whole release.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from . import PipelineError, pdfstore, provenance
from .config import config_hash
from .io import remove_stale_tmp, write_json_atomic
from .layout import Layout
from .partition import ID_COL, read_meta

log = logging.getLogger(__name__)


def _file_meta(path: str) -> dict:
    md = pq.ParquetFile(path).metadata
    return json.loads((md.metadata or {}).get(b"pzpipe", b"{}"))


def check_conservation(layout: Layout, partition_files: dict[str, str],
                       estimate_files: dict[str, dict[str, str]], verify_ids: bool = True) -> dict:
    """Return the conservation report; raise PipelineError on any violation."""
    errors = []
    cut_totals: Counter = Counter()
    rows_in = rows_out = 0
    expected_chunks = {c.index: c for c in layout.chunks()} if layout.n_chunks < 2_000_000 else None
    seen_chunks = set()
    all_ids = []
    for batch, pfile in sorted(partition_files.items()):
        meta = read_meta(pfile)
        for ch in meta["chunks"]:
            seen_chunks.add(ch["chunk"])
            ncut = sum(ch["cut"].values())
            if ch["rows_in"] != ch["rows_out"] + ncut:
                errors.append(f"batch {batch} chunk {ch['chunk']}: rows_in {ch['rows_in']} != "
                              f"rows_out {ch['rows_out']} + cut {ncut}")
            if expected_chunks is not None:
                exp = expected_chunks.get(ch["chunk"])
                if exp is None or exp.rows != ch["rows_in"]:
                    errors.append(f"batch {batch} chunk {ch['chunk']}: {ch['rows_in']} input rows "
                                  f"but the layout expects {exp.rows if exp else 'no such chunk'}")
            rows_in += ch["rows_in"]
            rows_out += ch["rows_out"]
            cut_totals.update(ch["cut"])
        pids = pq.read_table(pfile, columns=[ID_COL]).column(ID_COL).to_numpy() if verify_ids else None
        if verify_ids:
            all_ids.append(pids)
        prow = sum(ch["rows_out"] for ch in meta["chunks"])
        for algo, files in estimate_files.items():
            efile = files.get(batch)
            if efile is None:
                errors.append(f"{algo}: no estimate file for batch {batch}")
                continue
            n = pq.ParquetFile(efile).metadata.num_rows
            if n != prow:
                errors.append(f"{algo} batch {batch}: {n} rows, partition has {prow}")
                continue
            if verify_ids:
                eids = pq.read_table(efile, columns=[ID_COL]).column(ID_COL).to_numpy()
                if not np.array_equal(eids, pids):
                    errors.append(f"{algo} batch {batch}: object ids differ from the partition")
    if expected_chunks is not None and seen_chunks != set(expected_chunks):
        missing = sorted(set(expected_chunks) - seen_chunks)
        errors.append(f"chunks missing from the partitions: {missing[:10]}")
    if rows_in != layout.n_objects:
        errors.append(f"{rows_in} input rows partitioned, the inputs hold {layout.n_objects}")
    n_dup = 0
    if verify_ids and all_ids:
        ids = np.sort(np.concatenate(all_ids))
        dup = ids[1:][ids[1:] == ids[:-1]]
        n_dup = int(len(np.unique(dup)))
        if n_dup:
            errors.append(f"{n_dup} object ids appear in more than one batch "
                          f"(e.g. {np.unique(dup)[:5].tolist()}): duplicate ids across input files")
    report = {"ok": not errors, "errors": errors, "objects_in": rows_in, "objects_out": rows_out,
              "cut_by_reason": dict(cut_totals), "duplicate_ids": n_dup,
              "ids_verified": verify_ids, "algorithms": sorted(estimate_files)}
    if errors:
        raise PipelineError("object conservation check failed:\n  " + "\n  ".join(errors[:20]))
    return report


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run(layout: Layout, partition_files: dict[str, str], estimate_files: dict[str, dict[str, str]],
        model_files: dict[str, str], cfg: dict, out_dir: str, verify_ids: bool = True) -> dict:
    report = check_conservation(layout, partition_files, estimate_files, verify_ids)
    out = Path(out_dir)
    remove_stale_tmp(out)                       # left by a killed export
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        files = []
        for algo, batches in sorted(estimate_files.items()):
            (tmp / algo).mkdir()
            for batch, src in sorted(batches.items()):
                rel = f"{algo}/{batch}.parquet"
                _link_or_copy(src, str(tmp / rel))
                md = pq.ParquetFile(src).metadata
                files.append({"path": rel, "algorithm": algo, "batch": batch,
                              "rows": md.num_rows, "row_groups": md.num_row_groups,
                              "bytes": os.path.getsize(src),
                              "sha256": provenance.sha256_file(src)})
        write_json_atomic(tmp / "conservation.json", report)
        rows_by_algo = Counter()
        for f in files:
            rows_by_algo[f["algorithm"]] += f["rows"]
        manifest = {
            "release": cfg["release"],
            "code": provenance.code_version(),
            "config_hash": config_hash(cfg),
            "config": cfg,
            "packages": provenance.package_versions(),
            "inputs": {"n_files": len(layout.files), "n_objects": layout.n_objects,
                       "files": [{"path": p, "rows": n} for p, n in layout.files[:10000]]},
            "layout": {"chunk_rows": layout.chunk_rows, "chunks": layout.n_chunks,
                       "chunks_per_batch": layout.chunks_per_batch, "batches": layout.n_batches},
            "models": {a: {"path": p, "sha256": provenance.sha256_file(p)}
                       for a, p in sorted(model_files.items())},
            "zgrid": [cfg["zgrid"]["zmin"], cfg["zgrid"]["zmax"], cfg["zgrid"]["nz"]],
            "pdf_encoding": pdfstore.ENCODING,
            "pdf_reader": "pzpipe.pdfstore.to_ensemble(path) -> qp.Ensemble",
            "rows_by_algorithm": dict(rows_by_algo),
            "conservation": report,
            "files": files,
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("release %s: %d files, %s", out, len(files), dict(rows_by_algo))
    return manifest


def run_release(layout: Layout, algos: list[str], cfg: dict, out_dir: str,
                results: str = "results") -> dict:
    """Rule entry point: the pipeline's file naming under ``results``."""
    batches = layout.batch_ids()
    return run(layout,
               {b: f"{results}/partition/{b}.parquet" for b in batches},
               {a: {b: f"{results}/estimates/{a}/{b}.parquet" for b in batches} for a in algos},
               {a: f"{results}/models/{a}/model.pkl" for a in algos},
               cfg, out_dir)
