#!/usr/bin/env python
"""Seconds per stage of the pipeline's estimate step on one chunk (default: BPZ, 130,000
DC2 validation objects, the bench's sample): read the partition row group, the estimator
(``Runner.estimate``: input copies, the algorithm or its fast path), point estimates,
PDF encoding, building the arrow table, writing the parquet file.

The stages are timed inside the same loop as ``estimate.estimate_table`` (sub-chunks of
``estimate.subchunk_rows``); the table is checked to be equal to ``estimate_table``'s, and
the table written here to equal the one ``run_batch`` writes (its sha256 is printed,
to compare versions of the code) (so the timed
code is the code the pipeline runs). Best of ``--repeat`` runs per stage, one process, one
thread; the machine may be shared: compare stages, and runs made at the same time.

    python benchmarks/estimate_stages.py [--algo bpz] [--rows 130000] [--repeat 3]

Needs ``results/models/<algo>/model.pkl`` (and ``results/<algo>_data`` for BPZ) under the
current directory, as ``python -m pzpipe.planning.bench``.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

STAGES = ("read", "estimator", "point estimates", "encode", "table", "write")


def one_run(runner, part, out, bits, sub):
    from pzpipe.stages import estimate
    from pzpipe.release import pdfstore
    from pzpipe.stages.partition import ID_COL
    from pzpipe.release.pointest import FLAG_PDF_BAD, KEYS, point_estimates

    t = dict.fromkeys(STAGES, 0.0)
    c = time.perf_counter
    t0 = c()
    data = estimate._read_row_group(part, 0)
    t["read"] += c() - t0
    flags = data.pop("flags")
    z = runner.zgrid
    schema = estimate.output_schema(runner.algo, z)
    n = len(data[ID_COL])
    step = n if runner.algo.chunk_coupled else sub
    runner.begin_chunk(0)
    parts = []
    for s in range(0, n, step):
        sd = {k: v[s:s + step] for k, v in data.items()}
        t0 = c()
        pdf, extras = runner.estimate(sd, 0, seed=False)
        t1 = c()
        pe, bad = point_estimates(pdf, z)
        t2 = c()
        enc = pdfstore.encode(pdf, z, bits=bits)
        t3 = c()
        m = len(bad)
        cols = {ID_COL: pa.array(np.asarray(sd[ID_COL], dtype=np.int64))}
        for k in KEYS:
            cols[k] = pa.array(pe[k].astype(np.float32))
        for k in runner.algo.extras.values():
            cols[k] = pa.array(np.asarray(extras.get(k, np.full(m, np.nan)), dtype=np.float32))
        f = flags[s:s + step]
        cols["flags"] = pa.array((f | np.where(bad, FLAG_PDF_BAD, 0)).astype(np.int32))
        cols["pdf"] = enc
        parts.append(pa.table(cols, schema=schema))
        t4 = c()
        t["estimator"] += t1 - t0
        t["point estimates"] += t2 - t1
        t["encode"] += t3 - t2
        t["table"] += t4 - t3
    t0 = c()
    table = pa.concat_tables(parts).combine_chunks()
    t["table"] += c() - t0
    t0 = c()
    with pq.ParquetWriter(out, schema, **pdfstore.PARQUET_KWARGS) as w:
        w.write_table(table, row_group_size=max(table.num_rows, 1))
    t["write"] += c() - t0
    return t, table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="bpz")
    ap.add_argument("--rows", type=int, default=130000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default="results/models")
    args = ap.parse_args(argv)

    from pzpipe import algorithms
    from pzpipe.stages import estimate
    from pzpipe.run.provenance import sha256_file
    from pzpipe.planning.bench import _sample, _write_partition
    from pzpipe.run.config import REPO_ROOT, load_config

    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    model = os.path.join(args.models, args.algo, "model.pkl")
    bits = int(cfg["estimate"]["pdf_bits"])
    sub = int(cfg["estimate"]["subchunk_rows"])
    d = _sample(cfg, args.rows)
    with tempfile.TemporaryDirectory(prefix="estimate_stages_") as td:
        part = os.path.join(td, "part.parquet")
        _write_partition(d, part, args.rows)
        estimate._limit_threads()
        runner = algorithms.Runner(algorithms.get(args.algo), model, cfg)
        warm = {k: v[:100] for k, v in d.items() if k != "flags"}
        estimate.estimate_table(runner, warm, d["flags"][:100], 0, bits, sub)   # compile
        best = dict.fromkeys(STAGES, np.inf)
        totals = []
        load0 = os.getloadavg()
        for _ in range(args.repeat):
            t, table = one_run(runner, part, os.path.join(td, "stages.parquet"), bits, sub)
            totals.append(sum(t.values()))
            for k in STAGES:
                best[k] = min(best[k], t[k])
        # the timed loop computes what the pipeline computes: the same table as
        # estimate_table, and as the file run_batch writes
        data = estimate._read_row_group(part, 0)
        flags = data.pop("flags")
        ref = estimate.estimate_table(runner, data, flags, 0, bits, sub)
        assert ref.equals(table), "timed loop differs from estimate_table"
        out = os.path.join(td, "run_batch.parquet")
        estimate.run_batch(args.algo, part, model, cfg, out, workers=1)
        assert pq.read_table(out).equals(table), "timed table differs from run_batch's file"
        sha = sha256_file(out)[:16]
        load1 = os.getloadavg()
    n = args.rows
    print(f"# {args.algo}, {n} objects in one chunk (sub-chunks of {sub}), best of {args.repeat} "
          f"per stage; {platform.machine()}, {os.cpu_count()} cpus, python "
          f"{platform.python_version()}; load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    print("| stage | s per chunk | us/object | share |")
    print("|---|---|---|---|")
    tot = sum(best.values())
    for k in STAGES:
        print(f"| {k} | {best[k]:.3f} | {1e6 * best[k] / n:.2f} | {100 * best[k] / tot:.1f}% |")
    print(f"| total (sum of bests) | {tot:.3f} | {1e6 * tot / n:.2f} | {n / tot:.0f} obj/s |")
    print(f"| total (median run) | {np.median(totals):.3f} | {1e6 * np.median(totals) / n:.2f} | "
          f"{n / np.median(totals):.0f} obj/s |")
    print(f"run_batch output sha256: {sha}")


if __name__ == "__main__":
    main()
