"""Per-job logging, and the one entry point of every rule's ``run:`` block.

``logged(log, func, *args)`` runs a stage function with the job's log file set up
(:func:`job_log`): a rule reads ``run: logged(log[0], partition.run_batch, ...)``, so a
newcomer sees which single function holds the logic. :func:`log_to` sends chosen
loggers (and Python warnings) to a file for the duration of a block, for stage
functions called outside Snakemake (the training-set steps' ``log=`` argument).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from pzpipe import PipelineError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def peak_memory() -> str:
    """Peak resident memory of this process (VmHWM) and of its largest finished child
    (estimate workers), for the job log; the rehearsal reads these lines."""
    import resource

    own = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    own = int(line.split()[1]) // 1024
    except OSError:
        pass
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return f"peak_rss_mb={own} child_peak_rss_mb={child}"


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None, names=("",), level=logging.INFO, mode: str = "a",
           warnings: bool = False):
    """Send the loggers ``names`` (``""``: the root logger) to ``path`` at ``level`` for
    the duration of the block (and Python warnings, when ``warnings``); nothing when
    ``path`` is None. Levels and handlers are restored afterwards."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode=mode)
    handler.setFormatter(logging.Formatter(FORMAT))
    loggers = [logging.getLogger(n or None) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
    if warnings:
        logging.captureWarnings(True)
    try:
        yield
    finally:
        if warnings:
            logging.captureWarnings(False)
        for lg, lvl in zip(loggers, old, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(lvl)
        handler.close()


@contextlib.contextmanager
def job_log(path: str, what: str):
    """Log to ``path`` (and stderr); on failure write one clear line and the traceback."""
    with log_to(path, mode="w"):
        log = logging.getLogger("pzpipe.job")
        t0 = time.time()
        log.info("start %s (pid %d, host %s)", what, os.getpid(), os.uname().nodename)
        try:
            yield log
            log.info("done %s in %.1f s (%s)", what, time.time() - t0, peak_memory())
        except PipelineError as exc:
            log.error("FAILED %s: %s", what, exc)
            print(f"\npzpipe error in {what}: {exc}\n(log: {path})", file=sys.stderr)
            raise
        except BaseException as exc:
            log.error("FAILED %s: %s\n%s", what, exc, traceback.format_exc())
            raise


def logged(log_path: str, func, *args, **kwargs):
    what = f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"
    with job_log(log_path, what):
        return func(*args, **kwargs)
