"""Per-job logging: every rule sends its log records and errors to its ``log:`` file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback

from . import PipelineError


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
def job_log(path: str, what: str):
    """Log to ``path`` (and stderr); on failure write one clear line and the traceback."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
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
    finally:
        root.removeHandler(handler)
        handler.close()
