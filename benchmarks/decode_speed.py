#!/usr/bin/env python
"""PDF decoding speed: numba (pzpipe.release.pdfstore.decode), numpy (pzpipe.release.read.decode_numpy)
and the standalone per-object decoder printed in docs/pdf_format.md.

Real PDFs: every algorithm enabled in config/config.yaml, trained on --train DC2
objects (TPZ: 2 trees), estimated on --n DC2 validation objects and encoded by the
pipeline (estimate_table, 10 bits); the encoded column is repeated --tile times.
Each decoder runs --repeat times (best run reported, one thread); numba is compiled
before timing. Prints a Markdown table (objects/s). The machine may be shared:
compare the ratios.

    python benchmarks/decode_speed.py [--n 2000] [--tile 50] [--repeat 3] [--train 1500]
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def best(f, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--tile", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train", type=int, default=1500)
    args = ap.parse_args(argv)

    import pyarrow as pa

    from pzpipe import algorithms
    from pzpipe.release import pdfstore, read
    from pzpipe.stages import train
    from pzpipe.core import zgrid
    from pzpipe.run.config import deep_update, enabled_algorithms, load_config
    from pzpipe.stages.estimate import estimate_table
    from pzpipe.stages.samples import read_sample

    cfg = load_config(REPO / "config" / "config.yaml")
    cfg = deep_update(cfg, {"training": {"max_rows": args.train},
                            "algorithms": {"tpz": {"inform": {"n_random": 1, "n_trees": 2}}}})
    doc = (REPO / "docs" / "pdf_format.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc.split("## A standalone decoder", 1)[1],
                     flags=re.S).group(1)
    ns: dict = {}
    exec(compile(code, "docs/pdf_format.md", "exec"), ns)
    z = zgrid.from_config(cfg)
    print(f"| algorithm | bytes/value (raw) | numba obj/s | numpy obj/s | standalone obj/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        cwd = os.getcwd()
        os.chdir(d)                          # BPZ data in results/bpz_data here
        try:
            data = read_sample(cfg, dict(cfg["validation"], max_rows=args.n))
            data.pop("redshift")
            flags = data.pop("flags")
            for a in enabled_algorithms(cfg):
                if algorithms.get(a).needs_bpz_data:
                    train.prepare_bpz_data(cfg, "results/bpz_data")
                train.run(a, cfg, f"{a}.pkl", f"{a}.json")
                r = algorithms.Runner(algorithms.get(a), f"{a}.pkl", cfg, name=f"speed_{a}")
                arr = estimate_table(r, data, flags, 0, 10).column("pdf").combine_chunks()
                big = pa.concat_arrays([arr] * args.tile)
                pdfstore.decode(big[:10], z)
                tn = best(lambda: pdfstore.decode(big, z), args.repeat)
                tp = best(lambda: read.decode_numpy(big, z), args.repeat)
                vals = arr.to_pylist()
                ts = best(lambda: [ns["decode_pdf"](v, z) for v in vals], args.repeat)
                raw = (arr.nbytes - 4 * (len(arr) + 1)) / len(arr)
                print(f"| {a} | {raw:.1f} | {len(big) / tn:,.0f} | {len(big) / tp:,.0f} | "
                      f"{len(vals) / ts:,.0f} |", flush=True)
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
