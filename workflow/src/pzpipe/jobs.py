"""The one entry point of every rule's ``run:`` block.

``logged(log, func, *args)`` runs a stage function with the job's log file set up
(pzpipe.runlog.job_log): a rule reads ``run: logged(log[0], partition.run_batch, ...)``,
so a newcomer sees which single function holds the logic.
"""

from __future__ import annotations

from .runlog import job_log


def logged(log_path: str, func, *args, **kwargs):
    what = f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"
    with job_log(log_path, what):
        return func(*args, **kwargs)
