"""Fault injection for the Slurm fault tests (tests/test_slurm_faults.py), loaded by every
Python process that has this directory on PYTHONPATH (sbatch --export=ALL carries it into
the jobs). The pipeline itself is not changed: this wraps ``run_batch`` of pzpipe's
estimate stage when that module is imported, in the estimate jobs named by PZPIPE_FAULTS;
every other process is left alone.

PZPIPE_FAULTS     "<algo>/<batch>=<mode>[;<algo>/<batch>=<mode>...]", modes:
                  "hold": the first call writes ``<algo>_<batch>.held`` and blocks (up to
                  900 s, then raises) so that the test can cancel the job or kill the
                  controller at a known point; later calls (the retry, the rerun) run
                  normally.
                  "mem:<MB>": every call grows the RSS of its Slurm job step to <MB> with a
                  ballast written page by page, holds it for PZPIPE_FAULT_MEM_SECONDS (5)
                  seconds, frees it and runs normally: a job whose real need is <MB>.
PZPIPE_FAULT_DIR  directory for the markers and records (``<algo>_<batch>.jsonl``: one JSON
                  line per event of the job: pid, Slurm job/array ids, the job's --mem)
"""
from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time

_TARGETS = ("pzpipe.stages.estimate",)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _step_rss_mb() -> float:
    """RSS of every process of this Slurm job step (what jobacct_gather sums): the tree
    under the highest ancestor that still carries this job's SLURM_JOB_ID."""
    job = os.environ.get("SLURM_JOB_ID")
    top, pid = os.getpid(), os.getpid()
    while job:
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{ppid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            break
        if f"SLURM_JOB_ID={job}".encode() not in env:
            break
        top = pid = ppid
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo = 0.0, [top]
    while todo:
        p = todo.pop()
        total += _rss_mb(p)
        todo.extend(children.get(p, []))
    return total


def _job_mem_mb() -> int | None:
    """The job's --mem (MB) as Slurm holds it (the jobstep's srun drops SLURM_MEM_PER_NODE)."""
    import re
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"MinMemoryNode=(\d+)([MG])", out)
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1) if m else None


def _faults() -> dict[str, str]:
    out = {}
    for item in os.environ.get("PZPIPE_FAULTS", "").split(";"):
        if "=" in item:
            target, mode = item.split("=", 1)
            out[target.strip()] = mode.strip()
    return out


def _record(path: str, **extra) -> None:
    rec = {"pid": os.getpid(), "time": time.time(), "job_mem_mb": _job_mem_mb(),
           **{k: os.environ.get(k) for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
                                             "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")}, **extra}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _wrap(run_batch):
    @functools.wraps(run_batch)
    def wrapped(algo_name, partition_file, model_path, cfg, output, *args, **kwargs):
        mode = next((m for t, m in _faults().items()
                     if str(output).endswith(f"/{t}.parquet")), None)
        if mode is None:
            return run_batch(algo_name, partition_file, model_path, cfg, output, *args, **kwargs)
        name = os.path.join(os.environ["PZPIPE_FAULT_DIR"],
                            os.path.basename(os.path.dirname(str(output))) + "_"
                            + os.path.basename(str(output)).split(".")[0])
        rec = name + ".jsonl"
        if mode == "hold":
            try:
                fd = os.open(name + ".held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                _record(rec, mode="hold", held=False)
            else:
                os.close(fd)
                _record(rec, mode="hold", held=True)
                deadline = time.time() + 900
                while time.time() < deadline:
                    time.sleep(0.2)
                raise RuntimeError("fault injection: held job was never cancelled")
        elif mode.startswith("mem:"):
            want = float(mode.split(":", 1)[1])
            before = _step_rss_mb()
            _record(rec, mode=mode, step_rss_before_mb=round(before), growing=True)
            size = max(0, int((want - before) * 2**20))
            ballast = bytearray(size)
            for i in range(0, size, 4096):          # write every page: real RSS
                ballast[i] = 1
            _record(rec, mode=mode, step_rss_after_mb=round(_step_rss_mb()))
            time.sleep(float(os.environ.get("PZPIPE_FAULT_MEM_SECONDS", 5)))
            del ballast
            _record(rec, mode=mode, survived=True)
        return run_batch(algo_name, partition_file, model_path, cfg, output, *args, **kwargs)

    return wrapped


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        module.run_batch = _wrap(module.run_batch)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if os.environ.get("PZPIPE_FAULTS") and os.environ.get("PZPIPE_FAULT_DIR"):
    sys.meta_path.insert(0, _Finder())
