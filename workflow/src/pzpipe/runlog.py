"""Per-job logging: every rule sends its log records and errors to its ``log:`` file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback

from . import PipelineError


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
        log.info("done %s in %.1f s", what, time.time() - t0)
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
