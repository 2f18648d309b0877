"""Cost of the HATS-collection jobs (pzpipe.stages.collection): margin_batch, index_batch,
index_bucket, each in a fresh process (peak RSS from the kernel, wall time), on a synthetic
Rubin-like HATS catalog (pzpipe.planning.synth) split into batches of whole pixels.

    python benchmarks/collection_scaling.py --objects 2e6 --rows-per-pixel 1e5 --batches 4 \\
        --out benchmarks/results/collection_scaling.json

The catalog's rows (~140 B in parquet) are smaller than a release's (~500 B with seven
estimators): the margin job's read time scales with bytes, the index jobs' with objects.
docs/scaling.md extrapolates from these figures.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "workflow" / "src"


def _job(code: str) -> dict:
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)})
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"job failed: {code[:200]}")
    return {"seconds": round(time.time() - t0, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=float, default=2e6)
    ap.add_argument("--rows-per-pixel", type=float, default=1e5)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--buckets", type=int, default=2)
    ap.add_argument("--margin-arcsec", type=float, default=5.0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(SRC))
    from hats.catalog import PartitionInfo

    from pzpipe.core import hatsio

    work = Path(tempfile.mkdtemp(prefix="collection_scaling-"))
    cat = work / "catalog"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "pzpipe.planning.synth", str(cat), "--objects",
                    str(a.objects), "--rows-per-pixel", str(a.rows_per_pixel)], check=True,
                   env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True)
    synth_s = time.time() - t0
    pixels = sorted(((int(p.order), int(p.pixel)) for p in
                     PartitionInfo.read_from_dir(cat).get_healpix_pixels()),
                    key=lambda x: hatsio.pixel_sort_key(*x))
    per = -(-len(pixels) // a.batches)
    batches = {f"b{i:06d}": pixels[i * per:(i + 1) * per] for i in range(a.batches)}
    rows, nbytes = [], 0
    for b, pxs in batches.items():
        bd = work / "batches" / b
        files = []
        for px in pxs:
            rel = os.path.relpath(hatsio.pixel_file("", *px), "")
            n = __import__("pyarrow.parquet").parquet.ParquetFile(cat / rel).metadata.num_rows
            rows.append({"path": rel, "rows": n, "row_groups": 1,
                         "bytes": (cat / rel).stat().st_size, "sha256": "", "batch": b})
            nbytes += (cat / rel).stat().st_size
            (bd / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(cat / rel, bd / rel)
            files.append({"path": rel, "pixel": list(px)})
        (bd / "report.json").write_text(json.dumps({"batch": b, "files": files}))
    with open(cat / "manifest_files.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    n_obj = sum(r["rows"] for r in rows)
    res = {"objects": n_obj, "load_average": os.getloadavg()[0], "pixels": len(pixels), "batches": a.batches,
           "catalog_bytes": nbytes, "synth_s": round(synth_s, 1), "jobs": {}}
    imp = "from pzpipe.stages import collection as c; "
    for b in batches:
        res["jobs"][f"margin_batch {b}"] = _job(
            imp + f"c.run_margin_batch({str(cat)!r}, {b!r}, {a.margin_arcsec}, "
                  f"{str(work / 'margin' / b)!r})")
    idx = []
    for b in batches:
        out = work / "index" / f"{b}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        res["jobs"][f"index_batch {b}"] = _job(
            imp + f"c.run_index_batch({str(work / 'batches' / b)!r}, 'objectId', {str(out)!r})")
        idx.append(str(out))
    for k in range(a.buckets):
        res["jobs"][f"index_bucket {k}"] = _job(
            imp + f"c.run_index_bucket({idx!r}, {k}, {a.buckets}, 'objectId', "
                  f"{str(work / 'buckets' / str(k))!r})")
    mrows = mbytes = 0
    for b in batches:
        rep = json.loads((work / "margin" / b / "report.json").read_text())
        mrows += rep["rows"]
        mbytes += sum(f["bytes"] for f in rep["files"])
    ibytes = sum(json.loads((work / "buckets" / str(k) / "report.json").read_text())["files"][0]["bytes"]
                 for k in range(a.buckets))
    res["margin_rows"] = mrows
    res["margin_row_fraction"] = round(mrows / n_obj, 4)
    res["margin_bytes"] = mbytes
    res["index_bytes"] = ibytes
    res["index_bytes_per_object"] = round(ibytes / n_obj, 2)
    for kind in ("margin_batch", "index_batch", "index_bucket"):
        js = [v for k, v in res["jobs"].items() if k.startswith(kind)]
        res[kind] = {"seconds_total": round(sum(j["seconds"] for j in js), 1),
                     "cpu_s_total": round(sum(j["cpu_s"] for j in js), 1),
                     "peak_rss_mb_max": max(j["peak_rss_mb"] for j in js),
                     "us_per_object": round(1e6 * sum(j["seconds"] for j in js) / n_obj, 2),
                     "cpu_us_per_object": round(1e6 * sum(j["cpu_s"] for j in js) / n_obj, 2)}
    txt = json.dumps(res, indent=1)
    print(txt)
    if a.out:
        Path(a.out).write_text(txt + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
