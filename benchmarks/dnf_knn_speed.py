#!/usr/bin/env python
"""Objects per second of RAIL's DNFEstimator / KNearNeighEstimator vs pzpipe's
FastDNF / FastKNN, and peak RSS of FastDNF / FastKNN on a 130k-object chunk.

Both codes run in this process, one thread (OMP/OpenBLAS/numba), on the same objects
(shuffled DC2 validation rows, replicated with new ids past 20,449, as ``make bench``
samples them; defaults: 8,000 for DNF and 40,000 for kNN, ``make bench``'s sizes), with
models trained here by RAIL's informers (RAIL defaults) on the DC2 training file. Each
code gets a warm-up call (imports, numba compile/cache, model loading) and then
``--repeats`` interleaved timed calls; medians are reported, wall and CPU time.

* bare RAIL = ``stage.estimate(data)`` with RAIL's defaults (``chunk_size`` 10,000: one
  call for DNF's 8,000 objects), as ``make bench`` times it; "+pdf" adds what the pipeline
  also needs from RAIL, ``ens.pdf(zgrid)`` (for kNN: a second mixture evaluation).
* FastDNF / FastKNN = ``.estimate(data)``, which returns the PDFs on the grid and the
  ancil; the script checks that they equal RAIL's (exact equality).
* peak RSS: a child process loads the model, estimates one chunk of ``--mem-rows``
  objects and reports its VmHWM (and its VmRSS just before the estimate) and the
  chunk's time (DNF couples the whole chunk: its neighbour lists are cut at the chunk's
  maximum inlier count, which grows with the chunk).

    python benchmarks/dnf_knn_speed.py [--dnf-rows 8000] [--knn-rows 40000] [--repeats 3]
        [--mem-rows 130000] [--out benchmarks/results/dnf_knn_speed.txt]
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from pzpipe.planning.bench import DC2_RAIL_PARAMS as PARAMS  # noqa: E402
from pzpipe.planning.bench import resample  # noqa: E402


def _read(name):
    import tables_io
    from rail.utils.path_utils import find_rail_file

    d = tables_io.read(find_rail_file(f"examples_data/testdata/{name}"))["photometry"]
    d = {k: np.asarray(v) for k, v in d.items()}
    d["object_id"] = d.pop("id")
    return d


def sample(n, seed=0):
    """n DC2 validation objects, shuffled, replicated with new ids past 20,449."""
    d = _read("test_dc2_validation_9816.hdf5")
    d.pop("redshift")
    return resample(d, n, seed)


def train(algo, path):
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    if algo == "dnf":
        from rail.estimation.algos.dnf import DNFInformer as Inf
    else:
        from rail.estimation.algos.k_nearneigh import KNearNeighInformer as Inf
    with contextlib.redirect_stdout(io.StringIO()):
        Inf.make_stage(name=f"inform_{algo}", model=path, **PARAMS).inform(
            _read("test_dc2_training_9816.hdf5"))
    with open(path, "rb") as f:
        return pickle.load(f)


def fast_class(algo):
    if algo == "dnf":
        from pzpipe.algorithms.dnf_fast import FastDNF
        return FastDNF
    from pzpipe.algorithms.knn_fast import FastKNN
    return FastKNN


def rail_stage(algo, model_path):
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    if algo == "dnf":
        from rail.estimation.algos.dnf import DNFEstimator as Est
    else:
        from rail.estimation.algos.k_nearneigh import KNearNeighEstimator as Est
    return Est.make_stage(name=f"bare_{algo}_{time.time_ns()}", model=model_path,
                          output_mode="return", **PARAMS)


def _quiet(fn, *a):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a)


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def bench(algo, model_path, model, n, repeats):
    d = sample(n)
    zgrid = np.linspace(PARAMS["zmin"], PARAMS["zmax"], PARAMS["nzbins"])
    stage = rail_stage(algo, model_path)
    fast = fast_class(algo)(model, PARAMS)
    warm = {k: v[:50].copy() for k, v in d.items()}
    _quiet(stage.estimate, warm)
    fast.estimate(warm)
    copy = lambda: {k: v.copy() for k, v in d.items()}  # noqa: E731
    t = {"rail": [], "rail_pdf": [], "fast": []}
    same = True
    for _ in range(repeats):
        data = copy()
        ens, w, c = timed(lambda: _quiet(stage.estimate, data).data)
        t["rail"].append((w, c))
        ref, w, c = timed(lambda: np.asarray(_quiet(ens.pdf, zgrid)).reshape(n, -1))
        t["rail_pdf"].append((w, c))
        del ens
        (pdf, anc), w, c = timed(lambda: fast.estimate(d))
        t["fast"].append((w, c))
        same &= bool(np.array_equal(pdf, ref, equal_nan=True))
        del pdf, ref
    med = {k: (float(np.median([x[0] for x in v])), float(np.median([x[1] for x in v])))
           for k, v in t.items()}
    return dict(n=n, times=t, median=med, identical=same)


def mem_child(algo, model_path, rows):
    """Runs in a child: VmRSS before and VmHWM after one chunk of ``rows`` objects."""
    with open(model_path, "rb") as f:
        model = pickle.load(f)
    fast = fast_class(algo)(model, PARAMS)
    d = sample(rows)
    fast.estimate({k: v[:50] for k, v in d.items()})

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    base = status("VmRSS:")
    w, c = time.perf_counter(), time.process_time()
    pdf, anc = fast.estimate(d)
    w, c = time.perf_counter() - w, time.process_time() - c
    print(f"MEM {base:.1f} {status('VmHWM:'):.1f} {pdf.shape[0]} {w:.3f} {c:.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dnf-rows", type=int, default=8000)
    ap.add_argument("--knn-rows", type=int, default=40000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mem-rows", type=int, default=130000)
    ap.add_argument("--algos", default="dnf,knn")
    ap.add_argument("--out", default="")
    ap.add_argument("--mem-child", nargs=3, metavar=("ALGO", "MODEL", "ROWS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mem_child:
        mem_child(args.mem_child[0], args.mem_child[1], int(args.mem_child[2]))
        return

    import numba
    import qp
    import sklearn

    tmp = tempfile.mkdtemp(prefix="dnf_knn_speed_")
    lines = [
        "$ python benchmarks/dnf_knn_speed.py " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]),
        f"# {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; host {platform.machine()}, "
        f"{os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__}, scikit-learn {sklearn.__version__}, qp {qp.__version__}",
        "# one thread per code; load average before: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + " (the machine is shared with other work: compare the ratios, CPU time is the steadier)",
    ]
    print("\n".join(lines), flush=True)
    rows = {"dnf": args.dnf_rows, "knn": args.knn_rows}
    for algo in args.algos.split(","):
        path = os.path.join(tmp, f"{algo}.pkl")
        model = train(algo, path)
        r = bench(algo, path, model, rows[algo], args.repeats)
        (rw, rc), (pw, pc), (fw, fc) = (r["median"][k] for k in ("rail", "rail_pdf", "fast"))
        n = r["n"]
        out = [
            f"{algo}: {n} objects, median of {args.repeats} interleaved runs",
            f"  bare RAIL estimate      : {n / rw:9.0f} obj/s wall {n / rc:9.0f} obj/s cpu"
            f"  ({rw:.2f} s)",
            f"  bare RAIL estimate+pdf  : {n / (rw + pw):9.0f} obj/s wall {n / (rc + pc):9.0f}"
            f" obj/s cpu  ({rw + pw:.2f} s)",
            f"  pzpipe Fast{algo.upper():<3}          : {n / fw:9.0f} obj/s wall {n / fc:9.0f}"
            f" obj/s cpu  ({fw:.3f} s)",
            f"  speed-up vs estimate    : {rw / fw:6.1f} x wall {rc / fc:6.1f} x cpu",
            f"  speed-up vs estimate+pdf: {(rw + pw) / fw:6.1f} x wall {(rc + pc) / fc:6.1f} x cpu",
            f"  PDFs identical to RAIL's ens.pdf(zgrid) in every run: {r['identical']}",
            "  runs (wall s, rail/rail_pdf/fast): " + "; ".join(
                f"{a[0]:.2f}/{b[0]:.2f}/{c[0]:.3f}" for a, b, c in
                zip(r["times"]["rail"], r["times"]["rail_pdf"], r["times"]["fast"])),
        ]
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--mem-child", algo,
                              path, str(args.mem_rows)], capture_output=True, text=True,
                             env=dict(os.environ))
        mem = [ln for ln in res.stdout.splitlines() if ln.startswith("MEM ")]
        if res.returncode != 0 or not mem:
            out.append(f"  peak RSS: child failed: {res.stderr[-500:]}")
        else:
            _, base, peak, m, w, c = mem[0].split()
            out.append(f"  peak RSS (VmHWM), one Fast{algo.upper()} chunk of {m} objects: "
                       f"{float(peak):.0f} MB (before the estimate: {float(base):.0f} MB); "
                       f"that chunk took {float(w):.1f} s wall, {float(c):.1f} s cpu "
                       f"({int(m) / float(w):.0f} / {int(m) / float(c):.0f} obj/s)")
        print("\n".join(out), flush=True)
        lines += out
    shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
