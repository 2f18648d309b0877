#!/usr/bin/env python
"""Benchmark: plan a data release with a Snakemake dry run, before the data exists.

For each object count (default 20e9 = DR1 and 40e9 = DR11) this writes a config
overlay with a synthetic input descriptor ``{n_objects: N, rows_per_file: M}``
(the layout then needs no file), picks ``chunks_per_batch`` so that the DAG
stays at or below ``--max-jobs`` Snakemake jobs (``pzpipe.planning.plan``), runs

    snakemake -n --quiet rules -s workflow/Snakefile --directory <tmp> --configfile <overlay>

in an empty working directory, and measures its wall time and peak RSS
(``os.wait4`` rusage of the snakemake process). It prints the dry run's job
counts next to ``pzpipe.planning.plan``'s, then the plan (core-hours, wall time,
storage). Exit status 1 if a dry run fails or exceeds ``--max-seconds`` /
``--max-gb`` (issue 5: < 60 s and < 2 GB for 40e9 objects on the 2-core machine).

    python benchmarks/dryrun_plan.py                       # 20e9 and 40e9
    python benchmarks/dryrun_plan.py --objects 40e9 --rows-per-file 1e6
    python benchmarks/dryrun_plan.py --out benchmarks/results/dryrun_plan.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "src"))

from pzpipe.planning import plan as P  # noqa: E402


def enabled_algorithms(cfg_path: Path) -> list[str]:
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)
    algos = cfg.get("algorithms", {}) or {}
    return [a for a, v in algos.items() if (v or {}).get("enabled", True)]


def run_dry(n_objects: float, rows_per_file: int, cpb: int, workdir: Path,
            snakemake: str, extra: list[str], hats: bool = False) -> dict:
    overlay = workdir / "plan.yaml"
    key = "rows_per_pixel" if hats else "rows_per_file"
    overlay.write_text(yaml.safe_dump({
        "inputs": {"descriptor": {"n_objects": int(n_objects), key: rows_per_file}},
        "batch": {"chunks_per_batch": cpb},
    }))
    cmd = [snakemake, "-n", "--quiet", "rules", "-s", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(overlay), *extra]
    t0 = time.perf_counter()
    with open(workdir / "stdout.txt", "w") as out, open(workdir / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=workdir)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = (workdir / "stdout.txt").read_text() + (workdir / "stderr.txt").read_text()
    counts: dict[str, int] = {}
    m = re.search(r"Job stats:\n(.*?)\n\n", text, re.S)
    if m:
        for line in m.group(1).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return {"cmd": cmd, "rc": proc.returncode, "wall_s": wall,
            "max_rss_mb": ru.ru_maxrss / 1024.0, "counts": counts,
            "tail": "\n".join(text.strip().splitlines()[-15:])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", nargs="+", type=float, default=[20e9, 40e9])
    ap.add_argument("--rows-per-file", type=float, default=130_000,
                    help="rows per input file (LIneA's 40e9 reference: ~300k files of ~130k)")
    ap.add_argument("--chunk-rows", type=int, default=130_000)
    ap.add_argument("--chunks-per-batch", type=int, default=None,
                    help="default: smallest value giving <= --max-jobs jobs (pzpipe.planning.plan)")
    ap.add_argument("--max-jobs", type=int, default=3000)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--max-gb", type=float, default=2.0)
    ap.add_argument("--snakemake", default=shutil.which("snakemake")
                    or str(Path(sys.executable).parent / "snakemake"))
    ap.add_argument("--hats", action="store_true",
                    help="the input is a HATS catalog: --rows-per-file is rows per pixel and a "
                         "batch holds whole pixels")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary working dirs")
    ap.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    a = ap.parse_args(argv)

    algos = enabled_algorithms(REPO / "config" / "config.yaml")
    rpf = int(a.rows_per_file)
    lines: list[str] = []
    say = lines.append
    args = argv if argv is not None else sys.argv[1:]
    say(f"# {' '.join(['python', 'benchmarks/dryrun_plan.py', *args])}")
    say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} host {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, snakemake "
        f"{subprocess.run([a.snakemake, '--version'], capture_output=True, text=True).stdout.strip()}")
    say(f"# algorithms (config/config.yaml): {', '.join(algos)}; rows per input "
        f"{'HATS pixel' if a.hats else 'file'} {rpf:,}; chunk_rows {a.chunk_rows:,}")
    ok = True
    plans = []
    for n in a.objects:
        p = P.plan(n, rows_per_file=rpf, chunk_rows=a.chunk_rows,
                   chunks_per_batch=a.chunks_per_batch, algorithms=algos, max_jobs=a.max_jobs,
                   hats=a.hats)
        plans.append(p)
        wd = Path(tempfile.mkdtemp(prefix="pz-dryrun-"))
        (wd / "config").symlink_to(REPO / "config")
        try:
            r = run_dry(n, rpf, p["chunks_per_batch"], wd, a.snakemake, a.extra, a.hats)
        finally:
            if not a.keep:
                shutil.rmtree(wd, ignore_errors=True)
        within = r["rc"] == 0 and r["wall_s"] < a.max_seconds and r["max_rss_mb"] < a.max_gb * 1024
        ok &= within
        say("")
        say(f"== {n:.3g} objects: {p['files']:,} {'pixels' if a.hats else 'files'}, "
            f"{p['chunks']:,} chunks, "
            f"{p['chunks_per_batch']} chunks/batch -> {p['batches']:,} batches")
        say(f"   snakemake -n: exit {r['rc']}, wall {r['wall_s']:.1f} s, peak RSS "
            f"{r['max_rss_mb']:.0f} MB  [{'OK' if within else 'OVER LIMIT'}: "
            f"< {a.max_seconds:g} s, < {a.max_gb:g} GB]")
        say("   command: " + " ".join(r["cmd"][:1] + [c if " " not in c else repr(c)
                                                     for c in r["cmd"][1:]]))
        say(f"   {'rule':<18} {'dry run':>8} {'plan':>8}")
        plan_counts = {**{k: v for k, v in p["jobs"].items() if v}, "total": p["total_jobs"]}
        for rule in sorted(set(r["counts"]) | set(plan_counts), key=lambda x: (x == "total", x)):
            dr = r["counts"].get(rule, "-")
            pl = plan_counts.get(rule, "-")
            mark = "" if dr == pl else "   (differs)"
            say(f"   {rule:<18} {dr!s:>8} {pl!s:>8}{mark}")
        if r["rc"] != 0:
            say("   dry run failed:\n" + r["tail"])
    for p in plans:
        say("")
        say(P.format_plan(p))
    report = "\n".join(lines)
    print(report)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(report + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
