#!/usr/bin/env python
"""Benchmark: time and peak memory of each export job, and their extrapolation to a
40e9-object release (docs/scaling.md).

Builds a synthetic HATS Object catalog (pzpipe.planning.synth), partitions it with the pipeline's
own code, writes estimate files of the real schema for 7 estimators (Gaussian PDFs
encoded with pdfstore; the estimators' speed is not what is measured here), then runs
each export job in a child process and records its wall time and peak RSS (VmHWM):

* ``export_batch`` on one batch of ``--objects`` objects (all its pixels);
* ``export_dedup`` on ``--dedup-ids`` hashed ids split over 50 batch files;
* ``export`` (final) on ``--pixels`` synthetic batch reports (one pixel file each).

    python benchmarks/export_scaling.py --objects 2e6 --dedup-ids 3e7 --pixels 20000 \\
        --out benchmarks/results/export_scaling.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "src"))
ALGOS = ["bpz", "fzboost", "knn", "tpz", "dnf", "gpz", "cmnn"]


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(fn, args, q):
    t0 = time.perf_counter()
    fn(*args)
    q.put({"seconds": time.perf_counter() - t0, "peak_rss_mb": _vmhwm_mb()})


def measure(fn, *args) -> dict:
    ctx = mp.get_context("spawn")        # a fresh process: VmHWM is the job's own
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"{fn.__name__} failed ({p.exitcode})")
    return q.get()


def fake_estimates(partition_file, algo, cfg, out):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pzpipe import algorithms
    from pzpipe.release import pdfstore
    from pzpipe.core import zgrid
    from pzpipe.stages.estimate import output_schema
    from pzpipe.stages.partition import ID_COL

    z = zgrid.from_config(cfg)
    try:
        a = algorithms.get(algo)
    except KeyError:
        a = algorithms.get("knn")
    schema = output_schema(a, z)
    pf = pq.ParquetFile(partition_file)
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(out, schema, **pdfstore.PARQUET_KWARGS) as w:
        for rg in range(pf.metadata.num_row_groups):
            ids = pf.read_row_group(rg, columns=[ID_COL]).column(ID_COL).to_numpy()
            n = len(ids)
            cols = {ID_COL: ids}
            mu = rng.uniform(0.1, 2.5, n)
            pdf = np.exp(-0.5 * ((z[None] - mu[:, None]) / rng.uniform(0.02, 0.2, n)[:, None]) ** 2)
            for c in schema.names:
                if c not in (ID_COL, "flags", "pdf"):
                    cols[c] = rng.uniform(0, 3, n).astype(np.float32)
            cols["flags"] = np.zeros(n, np.int32)
            cols["pdf"] = pdfstore.encode(pdf, z)
            w.write_table(pa.table(cols, schema=schema), row_group_size=n)


def fake_reports(tmp: Path, n: int, algos) -> list[str]:
    """``n`` batch outputs of one small pixel file each, as export_batch writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dirs = []
    t = pa.table({"objectId": np.arange(10)})
    for i in range(n):
        d = tmp / f"b{i:06d}"
        rel = f"dataset/Norder=11/Dir={(i // 10000) * 10000}/Npix={i}.parquet"
        (d / rel).parent.mkdir(parents=True)
        pq.write_table(t, d / rel)
        rep = {"batch": f"b{i:06d}", "kind": "hats", "chunks": 16, "chunk_range": [16 * i, 16 * i + 16],
               "rows_in": 2_000_000, "rows_out": 2_000_000, "cut_by_reason": {"require_true": 0},
               "algorithms": algos, "empty_pixels": [],
               "files": [{"path": rel, "rows": 2_000_000, "row_groups": 16, "bytes": 10,
                          "sha256": "0" * 64, "pixel": [11, i], "chunks": list(range(16))}]}
        (d / "report.json").write_text(json.dumps(rep))
        dirs.append(str(d))
    return dirs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=float, default=2e6)
    ap.add_argument("--rows-per-pixel", type=float, default=500_000)
    ap.add_argument("--dedup-ids", type=float, default=3e7)
    ap.add_argument("--pixels", type=int, default=20_000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from pzpipe.stages import export
    from pzpipe.planning import synth
    from pzpipe.run.config import deep_update, load_config, validate_config
    from pzpipe.run.layout import Layout, catalog_columns, make_layout
    from pzpipe.stages.partition import run_batch as partition_batch

    tmp = Path(tempfile.mkdtemp(prefix="pz-export-scaling-"))
    res = {"command": "python benchmarks/export_scaling.py " + " ".join(argv or sys.argv[1:]),
           "host": platform.node(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "algorithms": ALGOS}
    try:
        cat = tmp / "objects"
        synth.write_catalog(cat, int(a.objects), seed=1, rows_per_pixel=int(a.rows_per_pixel))
        cfg = load_config(REPO / "config" / "config.yaml")
        cfg = validate_config(deep_update(cfg, {"inputs": {"hats": str(cat)},
                                                "batch": {"chunks_per_batch": 10_000}}))
        lay = make_layout(cfg)
        cfg = catalog_columns(cfg, lay)
        assert lay.n_batches == 1
        part = tmp / "b000000.parquet"
        partition_batch(lay, "b000000", cfg, str(part))
        ests = {}
        for algo in ALGOS:
            ests[algo] = str(tmp / f"est_{algo}.parquet")
            fake_estimates(part, algo, cfg, ests[algo])
        algos = [x for x in ALGOS]
        try:
            from pzpipe import algorithms
            for x in ALGOS:
                algorithms.get(x)
        except KeyError:
            algos = ["bpz", "fzboost", "knn", "tpz", "dnf"]
            ests = {k: v for k, v in ests.items() if k in algos}
        m = measure(export.run_batch, lay, "b000000", algos, cfg, str(part), ests,
                    str(tmp / "batch"), str(tmp / "ids.parquet"), 1)
        n = lay.n_objects
        rel_bytes = sum(f.stat().st_size for f in (tmp / "batch").rglob("*.parquet"))
        res["export_batch"] = {**m, "objects": n, "chunks": lay.n_chunks, "algorithms": algos,
                               "us_per_object": 1e6 * m["seconds"] / n,
                               "release_bytes_per_object": rel_bytes / n}
        # dedup: n_ids hashed ids in 50 batch files, one bucket
        n_ids = int(a.dedup_ids)
        files = []
        per = n_ids // 50
        for i in range(50):
            files.append(str(tmp / f"ids{i}.parquet"))
            export.write_id_buckets(np.arange(i * per, (i + 1) * per, dtype=np.int64), 1, files[-1])
        m = measure(export.run_dedup, files, 0, str(tmp / "dedup.json"))
        res["export_dedup"] = {**m, "ids": per * 50, "ns_per_id": 1e9 * m["seconds"] / (per * 50)}
        # final: a.pixels batch reports
        dirs = fake_reports(tmp / "reports", a.pixels, algos)
        dd = tmp / "dedup_all.json"
        dd.write_text(json.dumps({"bucket": 0, "ids": 2_000_000 * a.pixels, "duplicate_ids": 0}))
        side = tmp / "side.json"
        side.write_text(json.dumps({"model_sha256": "0" * 64}))
        lay2 = Layout([(f"p{i}", 2_000_000) for i in range(a.pixels)], 130_000, 16,
                      pixels=[(11, i) for i in range(a.pixels)])
        cfg2 = deep_update(cfg, {"algorithms": {x: {"enabled": x in algos} for x in cfg["algorithms"]}})
        m = measure(export.run_release, lay2, algos, cfg2, dirs, [str(dd)],
                    {x: str(side) for x in algos}, str(tmp / "release"))
        res["export_final"] = {**m, "pixels": a.pixels, "batches": a.pixels}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # extrapolation to 40e9 objects, 20k pixels, 267 dedup buckets of 1.5e8 ids
    eb = res["export_batch"]
    res["at_40e9"] = {
        "export_batch_per_1e8_objects_s": eb["us_per_object"] * 1e8 / 1e6,
        "export_batch_core_hours": eb["us_per_object"] * 4e10 / 1e6 / 3600,
        "export_dedup_s_per_job_1.5e8_ids": res["export_dedup"]["ns_per_id"] * 1.5e8 / 1e9,
        "export_final_s_20k_pixels": res["export_final"]["seconds"] * 20_000 / a.pixels,
        "release_tb": eb["release_bytes_per_object"] * 4e10 / 1e12,
    }
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
