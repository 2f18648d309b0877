"""Job resources of the workflow's rules: one table, read by the rules and checked against
the profiles (tests/test_profiles.py).

* ``JOBS``: ``mem_mb`` and ``runtime`` (minutes) of every rule at attempt 1 (a retry
  multiplies both by the attempt), with the values of a site (``sizing.site`` of the
  site overlay, e.g. ``config/apollo.yaml``) where its nodes call for others. The rules
  take them with ``resources: **rule_resources(CFG, "<rule>")`` (``rules/common.smk``);
  the profiles set only site things (partition, account, threads, executor options) and
  ``tests/test_profiles.py`` fails if one sets a rule's ``mem_mb`` or ``runtime``
  (a profile's ``set-resources`` would silently win over the table).
* ``estimate_batch`` is sized from the per-chunk cost of each algorithm in
  ``resources/throughput.yaml`` (``estimate_mem_mb``, ``estimate_runtime_min``), scaled
  by the attempt so that a retry asks for more memory and time, and sent to the smallest
  partition whose time limit fits (``pick_partition``, with ``sizing.partitions``).

Throughput figures are objects/second for one worker on one core of the reference
machine; a site's ``core_speed`` converts them to that site's CPUs. The planner
(``python -m pzpipe.planning.plan``) uses the same throughput functions for its job hours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pzpipe.planning.forecast import (THROUGHPUT_FILE, algo_entry, batch_seconds,  # noqa: F401
                                      load_throughput, site_entry)
from pzpipe.run.config import schema_defaults

#: the ``sizing`` section's defaults, from the schema (its only source)
SIZING = schema_defaults("sizing")

# --------------------------------------------------------------------------
# the table: mem_mb (MB) and runtime (minutes) at attempt 1, both x attempt
# --------------------------------------------------------------------------
# ``"config"``: the rule passes the value from the config (the dask rules:
# ``inputs.to_hats.dask.mem_mb``, ``trainset.dask.mem_mb``). A missing key: the profile's
# ``default-resources`` apply (Snakemake's own defaults without a profile).
# ``mem_mb_per_thread``: added per thread of the job. ``sites``: a site's values
# (``sizing.site``) replacing the defaults (Apollo and Santos Dumont jobs get larger
# shares of their nodes' memory).
JOBS: dict[str, dict[str, Any]] = {
    "import_objects": {"mem_mb": "config", "runtime": 240},
    "partition_batch": {"mem_mb": 2000, "runtime": 30, "sites": {
        "apollo": {"mem_mb": 3000, "runtime": 60},
        "sdumont": {"mem_mb": 8000, "runtime": 90}}},
    # LePhare's library build (RAIL's LSST default galaxy library) is ~15 CPU-minutes on
    # the reference machine (~50 min on an Apollo slot, core_speed 0.324) and peaks above
    # 1.8 GB RSS
    "prepare_data": {"sites": {
        "apollo": {"mem_mb": 6000, "runtime": 120},
        "sdumont": {"mem_mb": 8000, "runtime": 120}}},
    "train": {"mem_mb": 4000, "runtime": 120, "sites": {
        "apollo": {"mem_mb": 16000},
        "sdumont": {"mem_mb": 32000}}},
    "estimate_batch": {},          # from resources/throughput.yaml: see rule_resources
    "validate_estimate": {"mem_mb": 2000, "mem_mb_per_thread": 2000, "sites": {
        "apollo": {"mem_mb": 8000, "mem_mb_per_thread": 0, "runtime": 60},
        "sdumont": {"mem_mb": 16000, "mem_mb_per_thread": 0, "runtime": 60}}},
    "validate": {"sites": {
        "apollo": {"mem_mb": 8000, "runtime": 60},
        "sdumont": {"mem_mb": 16000, "runtime": 60}}},
    "export_batch": {"mem_mb": 4000, "runtime": 60},
    "export_dedup": {"mem_mb": 4000, "runtime": 60},
    "export": {"mem_mb": 2000, "runtime": 60, "sites": {
        "apollo": {"mem_mb": 4000, "runtime": 240},
        "sdumont": {"mem_mb": 8000, "runtime": 240}}},
    # the HATS collection (pzpipe.stages.collection; docs/scaling.md): a margin job holds one
    # neighbouring pixel file and its batch's margin rows; an index batch job 17 B per object
    # of the batch; an index bucket job 17 B per id of its range (1.5e8 ids: 2.6 GB) + sort
    "margin_batch": {"mem_mb": 4000, "runtime": 60},
    "index_batch": {"mem_mb": 6000, "runtime": 30},
    "index_bucket": {"mem_mb": 8000, "runtime": 60},
    "release": {"mem_mb": 2000, "runtime": 60, "sites": {
        "apollo": {"mem_mb": 4000, "runtime": 240},
        "sdumont": {"mem_mb": 8000, "runtime": 240}}},
    "audit": {"mem_mb": 4000, "runtime": 120},
    "specz_compile": {"mem_mb": 4000, "runtime": 30},
    "specz_dedup": {"mem_mb": 4000, "runtime": 30},
    "photometry_hats": {"mem_mb": "config", "runtime": 240},
    "trainset_crossmatch": {"mem_mb": "config", "runtime": 120},
    "trainset_split": {"mem_mb": 4000, "runtime": 60},
}


def job_size(rule: str, site: str | None = None, threads: int = 1,
             mem_mb: int | None = None) -> dict[str, int]:
    """``mem_mb`` and ``runtime`` (minutes) of ``rule`` at attempt 1 on ``site`` (None:
    the defaults), the keys the table sets (see ``JOBS``).

    ``mem_mb``: the config's value for a rule whose table entry says ``"config"``."""
    if rule not in JOBS or rule == "estimate_batch":
        raise KeyError(f"no job size for rule {rule!r} in pzpipe.planning.resources.JOBS "
                       f"(estimate_batch is sized from the throughput file)")
    e = {**JOBS[rule], **((JOBS[rule].get("sites") or {}).get(site) or {})}
    out = {}
    if "mem_mb" in e:
        base = mem_mb if e["mem_mb"] == "config" else e["mem_mb"]
        if base is None:
            raise ValueError(f"rule {rule!r} takes mem_mb from the config: pass mem_mb")
        out["mem_mb"] = int(base) + int(e.get("mem_mb_per_thread", 0)) * max(1, int(threads))
    if "runtime" in e:
        out["runtime"] = int(e["runtime"])
    return out


# --------------------------------------------------------------------------
# estimate_batch
# --------------------------------------------------------------------------
def estimate_runtime_min(
    algo: str,
    chunks_per_batch: int,
    threads: int = 1,
    attempt: int = 1,
    *,
    chunk_rows: int,
    throughput: Mapping | None = None,
    site: str | None = None,
    margin: float = SIZING["runtime_margin"],
    overhead_min: float = SIZING["overhead_min"],
    attempt_factor: float = SIZING["attempt_factor"],
    max_min: int | None = None,
) -> int:
    """Slurm ``runtime`` (minutes) for estimate_batch: the one time model's job seconds
    (``forecast.batch_seconds``) x ``margin`` + ``overhead_min``, growing with ``attempt``
    (defaults: the schema's ``sizing`` section)."""
    sec = batch_seconds(
        algo, chunks_per_batch, threads, chunk_rows=chunk_rows, throughput=throughput, site=site
    )
    minutes = (sec * margin / 60.0 + overhead_min) * attempt_factor ** (max(1, attempt) - 1)
    minutes = int(math.ceil(minutes))
    if max_min:
        minutes = min(minutes, int(max_min))
    return max(1, minutes)


def estimate_mem_mb(
    algo: str,
    threads: int = 1,
    attempt: int = 1,
    *,
    chunk_rows: int,
    throughput: Mapping | None = None,
    base_mb: int = SIZING["base_mem_mb"],
    attempt_factor: float = SIZING["attempt_factor"],
    max_mb: int | None = None,
) -> int:
    """Slurm ``mem_mb`` for estimate_batch: base + per-worker peak (the throughput file's
    figure at its ``reference_chunk_rows``, scaled to ``chunk_rows``), x attempt."""
    tp = load_throughput(throughput)
    ref_rows = int(tp["reference_chunk_rows"])
    per_worker = float(algo_entry(tp, algo)["mem_mb_per_worker"]) * max(
        0.25, chunk_rows / ref_rows
    )
    mb = (base_mb + max(1, int(threads)) * per_worker) * attempt_factor ** (max(1, attempt) - 1)
    mb = int(math.ceil(mb / 100.0) * 100)
    if max_mb:
        mb = min(mb, int(max_mb))
    return mb


# --------------------------------------------------------------------------
# resource callables for the rules
# --------------------------------------------------------------------------
def rule_resources(config: Mapping, rule: str = "estimate_batch", *,
                   mem_mb: int | None = None) -> dict:
    """Resource callables for a rule, to unpack in a ``resources:`` directive.

    Usage in ``workflow/rules/*.smk``::

        rule estimate_batch:
            threads: config["estimate"]["workers"]
            resources:
                **rule_resources(CFG, "estimate_batch"),

    Every rule but ``estimate_batch``: the ``JOBS`` table for ``sizing.site``, times
    the attempt (``mem_mb``: the config's value for the rules whose table entry says
    ``"config"``). ``estimate_batch`` reads (all optional) ``config["sizing"]``:
    ``throughput_file`` (null: resources/throughput.yaml), ``site`` (key of ``sites``
    in that file, set by config/apollo.yaml etc.), ``runtime_margin``, ``overhead_min``,
    ``attempt_factor``, ``base_mem_mb``, ``max_runtime_min``, ``max_mem_mb`` (defaults:
    the schema's ``sizing`` section), ``partitions`` (list of
    ``{name, max_runtime_min, account?}``: when set, estimate_batch also gets
    ``slurm_partition`` (and ``slurm_account``) = the smallest partition whose time limit
    fits the job, see ``pick_partition``); plus ``partition.chunk_rows`` and
    ``batch.chunks_per_batch``. Each callable takes ``(wildcards, threads, attempt)`` or
    ``(wildcards, attempt)`` as Snakemake passes them.

    Note: a profile's ``set-resources`` for the same rule and resource wins over these,
    so profiles must not set mem_mb/runtime (tests/test_profiles.py checks it).
    """
    sizing = dict(config.get("sizing") or {})
    site = sizing.get("site")
    if rule != "estimate_batch":
        size = job_size(rule, site, mem_mb=mem_mb)
        e = {**JOBS[rule], **((JOBS[rule].get("sites") or {}).get(site) or {})}
        out: dict[str, Any] = {}
        if "mem_mb" in size:
            per_thread = int(e.get("mem_mb_per_thread", 0))
            if per_thread:
                def mem_mb_fn(wildcards, threads, attempt):
                    return job_size(rule, site, threads, mem_mb)["mem_mb"] * attempt
            else:
                def mem_mb_fn(wildcards, attempt):
                    return int(size["mem_mb"] * attempt)
            out["mem_mb"] = mem_mb_fn
        if "runtime" in size:
            def runtime(wildcards, attempt):
                return int(size["runtime"] * attempt)
            out["runtime"] = runtime
        return out

    sizing = {**SIZING, **sizing}
    tp_path = sizing["throughput_file"] or THROUGHPUT_FILE
    margin = float(sizing["runtime_margin"])
    factor = float(sizing["attempt_factor"])
    overhead = float(sizing["overhead_min"])
    base_mb = int(sizing["base_mem_mb"])
    max_rt = sizing["max_runtime_min"]
    max_mb = sizing["max_mem_mb"]
    chunk_rows = int(config["partition"]["chunk_rows"])
    cpb = int(config["batch"]["chunks_per_batch"])

    _cache: dict = {}

    def _tp():
        if "tp" not in _cache:
            _cache["tp"] = load_throughput(tp_path)
        return _cache["tp"]

    def mem(wildcards, threads, attempt):
        return estimate_mem_mb(
            wildcards.algo, threads, attempt, chunk_rows=chunk_rows, throughput=_tp(),
            base_mb=base_mb, attempt_factor=factor, max_mb=max_mb,
        )

    partitions = list(sizing.get("partitions") or [])

    def _runtime(wildcards, threads, attempt):
        return estimate_runtime_min(
            wildcards.algo, cpb, threads, attempt, chunk_rows=chunk_rows, throughput=_tp(),
            site=site, margin=margin, overhead_min=overhead, attempt_factor=factor, max_min=max_rt,
        )

    def runtime(wildcards, threads, attempt):
        rt = _runtime(wildcards, threads, attempt)
        if partitions:
            rt = min(rt, int(pick_partition(partitions, rt)["max_runtime_min"]))
        return rt

    out = {"mem_mb": mem, "runtime": runtime}
    if partitions:
        def slurm_partition(wildcards, threads, attempt):
            return str(pick_partition(partitions, _runtime(wildcards, threads, attempt))["name"])

        out["slurm_partition"] = slurm_partition
        if any(p.get("account") for p in partitions):
            def slurm_account(wildcards, threads, attempt):
                part = pick_partition(partitions, _runtime(wildcards, threads, attempt))
                return str(part.get("account") or "")

            out["slurm_account"] = slurm_account
    return out


def pick_partition(partitions: Sequence[Mapping], runtime_min: float) -> Mapping:
    """The partition with the smallest time limit that fits ``runtime_min``.

    ``partitions``: ``[{name, max_runtime_min, account?}, ...]`` in any order.
    When none fits, the one with the largest limit (the job is capped to it).
    """
    if not partitions:
        raise ValueError("no partitions configured")
    ordered = sorted(partitions, key=lambda p: float(p["max_runtime_min"]))
    for part in ordered:
        if runtime_min <= float(part["max_runtime_min"]):
            return part
    return ordered[-1]


