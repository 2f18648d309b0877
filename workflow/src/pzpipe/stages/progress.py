"""Progress of a release: chunks done / failed / running / remaining per stage.

Reads only what is cheap at 300k-chunk scale:

* one directory listing per stage (``os.scandir`` of
  ``results/estimates/{algo}/`` and ``results/partition/``), never a ``stat``
  per expected file;
* the parquet footer of each finished batch file (``num_row_groups`` = chunks
  written, ``num_rows`` = objects): one small read per *batch*, not per chunk,
  and skipped with ``verify=False``;
* the log of a batch only when it has a log but no output (running or failed),
  and then only its last few KB. Logs of finished batches are never opened.

Outputs are written atomically (``<name>.tmp-<pid>`` then rename), so a batch
file that exists is complete; a leftover ``.tmp-*`` marks a job that is running
or was killed. Logs follow the bounded layout ``logs/{rule}/{algo}/{batch}.log``
(``logs/partition_batch/{batch}.log`` for the partition stage): one directory
per rule and algorithm, one file per batch, ~3,000 files per release.

    python -m pzpipe.stages.progress                       # config/config.yaml
    python -m pzpipe.stages.progress --configfile config/config.yaml config/apollo.yaml
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BATCH_RE = re.compile(r"^(b\d{6})(?:\.parquet)?$")
TMP_RE = re.compile(r"^\.?(b\d{6})(?:\.parquet)?\.tmp-")
FAIL_PATTERNS = (b"FAILED", b"Traceback (most recent call last)", b"Error in rule",
                 b"MemoryError", b"DUE TO TIME LIMIT", b"oom-kill", b"oom_kill", b"OUT_OF_MEMORY",
                 # Slurm without cgroups (jobacct_gather OverMemoryKill), and scancel
                 b"Exceeded job memory limit", b"CANCELLED AT")
PARTITION = "partition"
MAX_LISTED = 20


@dataclass
class StageProgress:
    stage: str                      # "partition" or an algorithm name
    batches: int
    chunks: int
    batches_done: int = 0
    batches_failed: int = 0
    batches_running: int = 0
    batches_bad: int = 0            # output present but with the wrong number of row groups
    chunks_done: int = 0
    chunks_failed: int = 0
    chunks_running: int = 0
    objects_done: int = 0
    failed: list = field(default_factory=list)   # batch ids (first MAX_LISTED)
    bad: list = field(default_factory=list)

    @property
    def chunks_remaining(self) -> int:
        return self.chunks - self.chunks_done

    def as_dict(self) -> dict:
        d = asdict(self)
        d["chunks_remaining"] = self.chunks_remaining
        return d


def _chunks_in_batch(index: int, n_chunks: int, per_batch: int) -> int:
    lo = index * per_batch
    return max(0, min(per_batch, n_chunks - lo))


def _scan(directory: Path) -> tuple[set[str], set[str]]:
    """(batch ids with a finished file, batch ids with a leftover tmp file)."""
    done, tmp = set(), set()
    try:
        with os.scandir(directory) as it:
            for e in it:
                m = BATCH_RE.match(e.name)
                if m:
                    done.add(m.group(1))
                    continue
                m = TMP_RE.match(e.name)
                if m:
                    tmp.add(m.group(1))
    except FileNotFoundError:
        pass
    return done, tmp


def _list_logs(directory: Path) -> set[str]:
    out = set()
    try:
        with os.scandir(directory) as it:
            for e in it:
                if e.name.endswith(".log") and e.name.startswith("b"):
                    out.add(e.name[:-4])
    except FileNotFoundError:
        pass
    return out


def log_failed(path: str | Path, max_bytes: int = 8192) -> bool:
    """True if the tail of a job log shows an error (reads at most ``max_bytes``)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            tail = fh.read()
    except OSError:
        return False
    return any(p in tail for p in FAIL_PATTERNS)


def _footer(path: Path) -> tuple[int, int] | None:
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
    except Exception:  # noqa: BLE001 - unreadable footer = bad file
        return None
    return md.num_row_groups, md.num_rows


def stage_progress(
    stage: str,
    out_dir: str | Path,
    log_dir: str | Path,
    batch_ids: Sequence[str],
    n_chunks: int,
    chunks_per_batch: int,
    *,
    verify: bool = True,
    slurm_log_dir: str | Path | None = None,
    slurm_prefix: str = "",
    batch_chunks: Sequence[int] | None = None,
    kind: str = "file",
) -> StageProgress:
    """Progress of one stage whose outputs are ``{out_dir}/{batch}.parquet``.

    A batch is *done* if its file exists (and, with ``verify``, its footer has
    the expected number of row groups, else *bad*); *failed* if it has no file
    and the tail of its log (or of its Slurm log under
    ``{slurm_log_dir}/{slurm_prefix}{batch}/``, kept by the slurm plugin for
    failed jobs) shows an error or a Slurm kill (time limit, out of memory);
    *running* if it has a log or a leftover ``.tmp-*`` file but no error (a job
    killed without any message also shows here: check ``squeue``); otherwise
    *remaining*.

    ``batch_chunks``: chunks of each batch (HATS batches hold whole pixels, so their
    sizes differ); default ``chunks_per_batch`` each. ``kind="dir"``: the stage's outputs
    are directories ``{out_dir}/{batch}/`` (the export's batches), done when present.
    """
    out_dir, log_dir = Path(out_dir), Path(log_dir)
    sp = StageProgress(stage, len(batch_ids), n_chunks)
    done, tmp = _scan(out_dir)
    logs = _list_logs(log_dir)
    slurm_dirs: set[str] = set()
    if slurm_log_dir is not None:
        try:
            with os.scandir(slurm_log_dir) as it:
                slurm_dirs = {e.name for e in it if e.is_dir()}
        except FileNotFoundError:
            pass
    for i, b in enumerate(batch_ids):
        expected = (batch_chunks[i] if batch_chunks is not None
                    else _chunks_in_batch(i, n_chunks, chunks_per_batch))
        if b in done:
            if verify and kind == "file":
                f = _footer(out_dir / f"{b}.parquet")
                if f is None or f[0] != expected:
                    sp.batches_bad += 1
                    if len(sp.bad) < MAX_LISTED:
                        sp.bad.append(b)
                    continue
                sp.objects_done += f[1]
            sp.batches_done += 1
            sp.chunks_done += expected
            continue
        sdir = f"{slurm_prefix}{b}"
        if b not in logs and b not in tmp and sdir not in slurm_dirs:
            continue
        failed = b in logs and log_failed(log_dir / f"{b}.log")
        if not failed and sdir in slurm_dirs:
            failed = any(log_failed(p) for p in Path(slurm_log_dir, sdir).glob("*.log"))
        if failed:
            sp.batches_failed += 1
            sp.chunks_failed += expected
            if len(sp.failed) < MAX_LISTED:
                sp.failed.append(b)
        else:
            sp.batches_running += 1
            sp.chunks_running += expected
    return sp


def _layout_numbers(layout) -> tuple[list[str], int, int, list[int] | None]:
    if isinstance(layout, Mapping):
        return (list(layout["batch_ids"]), int(layout["n_chunks"]),
                int(layout["chunks_per_batch"]), layout.get("batch_chunks"))
    ids = list(layout.batch_ids())
    per = [hi - lo for lo, hi in (layout.batch_range(i) for i in range(len(ids)))]
    return ids, int(layout.n_chunks), int(layout.chunks_per_batch), per


def summary(
    results_dir: str | Path = "results",
    layout=None,
    algorithms: Iterable[str] | None = None,
    *,
    logs_dir: str | Path = "logs",
    verify: bool = True,
    include_partition: bool = True,
    slurm_logs_dir: str | Path | None = None,
    dirs: Mapping[str, str | Path] | None = None,
) -> list[dict]:
    """One row per stage (``partition`` then each algorithm).

    ``layout``: a ``pzpipe.run.layout.Layout`` or a mapping with ``batch_ids``,
    ``n_chunks``, ``chunks_per_batch``. ``algorithms``: default = the
    sub-directories of ``results/estimates``. ``slurm_logs_dir``: the profile's
    ``slurm-logdir`` (default ``{logs_dir}/slurm``). Row keys: stage, batches,
    chunks, chunks_done / failed / running / remaining, batches_done / failed /
    running / bad, objects_done, failed (first batch ids), bad. ``dirs``: the
    directories of the partition files, of the per-estimator estimate directories and of
    the export batches (keys ``partition``, ``estimates``, ``export_batches``; the rule
    passes them from PATHS); default: under ``results_dir``.
    """
    if layout is None:
        raise ValueError("summary needs the layout (pzpipe.run.layout.make_layout(config))")
    results_dir, logs_dir = Path(results_dir), Path(logs_dir)
    d = {"partition": results_dir / "partition", "estimates": results_dir / "estimates",
         "export_batches": results_dir / "export" / "batches"}
    d.update({k: Path(v) for k, v in (dirs or {}).items()})
    slurm = Path(slurm_logs_dir) if slurm_logs_dir is not None else logs_dir / "slurm"
    batch_ids, n_chunks, cpb, per = _layout_numbers(layout)
    if algorithms is None:
        est = d["estimates"]
        algorithms = sorted(p.name for p in est.iterdir() if p.is_dir()) if est.is_dir() else []
    rows = []
    if include_partition:
        rows.append(stage_progress(
            PARTITION, d["partition"], logs_dir / "partition_batch", batch_ids,
            n_chunks, cpb, verify=verify, batch_chunks=per,
            slurm_log_dir=slurm / "rule_partition_batch").as_dict())
    for algo in algorithms:
        # the slurm plugin names a job's log directory after its wildcard values
        # joined by "_": rule_estimate_batch/{algo}_{batch}/
        rows.append(stage_progress(
            algo, d["estimates"] / algo, logs_dir / "estimate_batch" / algo,
            batch_ids, n_chunks, cpb, verify=verify, batch_chunks=per,
            slurm_log_dir=slurm / "rule_estimate_batch", slurm_prefix=f"{algo}_").as_dict())
    if include_partition:
        rows.append(stage_progress(
            "export", d["export_batches"], logs_dir / "export_batch", batch_ids,
            n_chunks, cpb, verify=verify, batch_chunks=per, kind="dir",
            slurm_log_dir=slurm / "rule_export_batch").as_dict())
    return rows


def format_summary(rows: Sequence[Mapping]) -> str:
    head = (f"{'stage':<10} {'chunks':>9} {'done':>9} {'failed':>7} {'running':>8} "
            f"{'remaining':>10} {'%done':>6} {'objects done':>15}")
    out = [head, "-" * len(head)]
    for r in rows:
        pct = 100.0 * r["chunks_done"] / r["chunks"] if r["chunks"] else 100.0
        out.append(f"{r['stage']:<10} {r['chunks']:>9,} {r['chunks_done']:>9,} "
                   f"{r['chunks_failed']:>7,} {r['chunks_running']:>8,} "
                   f"{r['chunks_remaining']:>10,} {pct:>5.1f}% {r['objects_done']:>15,}")
    for r in rows:
        if r["failed"]:
            more = r["batches_failed"] - len(r["failed"])
            out.append(f"failed {r['stage']}: {', '.join(r['failed'])}"
                       + (f" (+{more} more)" if more > 0 else ""))
        if r["bad"]:
            out.append(f"wrong row-group count {r['stage']}: {', '.join(r['bad'])} "
                       "(delete these files and rerun)")
    return "\n".join(out)


def print_summary(results_dir, layout, algorithms, logs_dir="logs", dirs=None) -> list[dict]:
    """Rule entry point (``snakemake summary``): print and log the progress table."""
    import logging

    rows = summary(results_dir, layout, algorithms, logs_dir=logs_dir, dirs=dirs)
    text = format_summary(rows)
    logging.getLogger(__name__).info("\n%s", text)
    print(text)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pzpipe.stages.progress",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"],
                    help="config files, later ones override earlier ones (like snakemake)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--logs", default="logs")
    ap.add_argument("--no-verify", action="store_true", help="do not read parquet footers")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fail-on-failed", action="store_true",
                    help="exit 1 if any batch failed or has a bad file")
    a = ap.parse_args(argv)

    import yaml

    from pzpipe.run.config import deep_update, enabled_algorithms, validate_config
    from pzpipe.run.layout import make_layout

    cfg: dict = {}
    for f in a.configfile:
        with open(f) as fh:
            cfg = deep_update(cfg, yaml.safe_load(fh) or {})
    cfg = validate_config(cfg)
    layout = make_layout(cfg)
    rows = summary(a.results, layout, enabled_algorithms(cfg), logs_dir=a.logs,
                   verify=not a.no_verify)
    if a.json:
        import json

        print(json.dumps(rows, indent=2))
    else:
        print(format_summary(rows))
    if a.fail_on_failed and any(r["batches_failed"] or r["batches_bad"] for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
