#!/usr/bin/env python
"""Objects per second of RAIL's BPZliteEstimator vs pzpipe.algorithms.bpz_fast.FastBPZ.

Both run in this process, one after the other, on the same objects (default:
all 20,449 rows of the DC2 validation file shipped with pz-rail-base), with the
same model (BPZliteInformer defaults = HDFN prior), templates and config. RAIL's
AB files are generated before timing (in a copy of the BPZ data dir), numba is
compiled before timing, and each code is timed ``--repeat`` times (best run
reported, wall and CPU time). The machine may be shared: compare the ratio.

    python benchmarks/bpz_speed.py [--n 20449] [--repeat 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import pickle
import platform
import shutil
import tempfile
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=0, help="objects (0 = whole validation file)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per code (best kept)")
    ap.add_argument("--rail-repeat", type=int, default=1, help="timed RAIL runs (best kept)")
    ap.add_argument("--threads", type=int, default=1, help="FastBPZ numba threads")
    ap.add_argument("--data-dir", default="", help="writable BPZ data dir (default: fresh temp copy)")
    args = ap.parse_args(argv)

    import tables_io
    from rail.core.data import DataStore
    from rail.estimation.algos.bpz_lite import BPZliteEstimator, BPZliteInformer
    from rail.utils.path_utils import find_rail_file

    from pzpipe.algorithms.bpz_fast import FastBPZ

    DataStore.allow_overwrite = True
    tmp = tempfile.mkdtemp(prefix="bpz_speed_")
    data_dir = args.data_dir or os.path.join(tmp, "bpz_data")
    if not os.path.exists(data_dir):
        shutil.copytree(find_rail_file("examples_data/estimation_data/data"), data_dir)

    train = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_training_9816.hdf5"))["photometry"]
    valid = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_validation_9816.hdf5"))["photometry"]
    n = args.n or len(valid["id"])
    valid = {k: np.asarray(v)[:n] for k, v in valid.items()}
    copy = lambda d: {k: np.array(v, copy=True) for k, v in d.items()}  # noqa: E731

    common = dict(hdf5_groupname="", id_col="id", bpz_ref_data_path=data_dir)
    model_path = os.path.join(tmp, "bpz.pkl")
    with contextlib.redirect_stdout(io.StringIO()):
        BPZliteInformer.make_stage(name="inform_bpz", model=model_path, **common).inform(copy(train))
    with open(model_path, "rb") as fh:
        model = pickle.load(fh)

    def rail_run(data, name):
        est = BPZliteEstimator.make_stage(name=name, model=model_path, output_mode="return", **common)
        with contextlib.redirect_stdout(io.StringIO()):  # RAIL/desc_bpz chatter
            return est.estimate(copy(data)).data

    rail_run({k: v[:10] for k, v in valid.items()}, "warm")  # writes the AB files
    fast = FastBPZ(model, dict(bpz_ref_data_path=data_dir, n_threads=args.threads))
    fast.estimate({k: v[:10] for k, v in valid.items()})  # numba compile / cache load

    def timed(fn, repeat):
        best_w = best_c = np.inf
        out = None
        for _ in range(repeat):
            w, c = time.perf_counter(), time.process_time()
            out = fn()
            best_w = min(best_w, time.perf_counter() - w)
            best_c = min(best_c, time.process_time() - c)
        return out, best_w, best_c

    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ens, rw, rc = timed(lambda: rail_run(valid, "bpz_rail"), args.rail_repeat)
    (pdf, extras), fw, fc = timed(lambda: fast.estimate(valid), args.repeat)

    y = ens.objdata["yvals"]
    both = np.isfinite(y) & np.isfinite(pdf)
    rel = np.where(both, np.abs(pdf - y) / np.maximum(np.abs(y), np.finfo(float).tiny), 0.0)
    same_nan = bool(np.array_equal(np.isnan(y), np.isnan(pdf)))
    anc = ens.ancil

    def eq(a, b):
        a, b = np.ravel(a), np.ravel(b)
        return int(np.sum((a == b) | (np.isnan(a) & np.isnan(b))))

    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"objects: {n} (DC2 validation), threads (FastBPZ): {args.threads}, "
          f"best of {args.rail_repeat} (RAIL) / {args.repeat} (FastBPZ) runs; load average before: "
          f"{load0}")
    print(f"RAIL BPZliteEstimator: {n / rw:10.0f} obj/s wall  {n / rc:10.0f} obj/s cpu  ({rw:.2f} s)")
    print(f"FastBPZ              : {n / fw:10.0f} obj/s wall  {n / fc:10.0f} obj/s cpu  ({fw:.3f} s)")
    print(f"speed-up             : {rw / fw:10.1f} x wall    {rc / fc:10.1f} x cpu")
    print(f"max relative PDF difference: {rel.max():.3g} (NaN pattern equal: {same_nan}); "
          f"bit-identical PDF values: {np.mean((pdf == y) | (np.isnan(pdf) & np.isnan(y))):.6f}")
    for k in ("zmode", "tb", "todds", "zmean"):
        print(f"{k:6s} identical: {eq(extras[k], anc[k])}/{n}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
