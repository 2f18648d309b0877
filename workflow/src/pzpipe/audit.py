"""Audit of a finished release: is what is published what the recorded run produced?

``run`` checks a release directory written by ``pzpipe.export`` and writes a report
(markdown + JSON), one line per check with PASS / FAIL / WARN and the reason:

1. ``manifest``      every file listed in ``manifest.json`` exists with the recorded
                     size and sha256; no file in the release is missing from the
                     manifest (orphans, ``.tmp-`` leftovers); ``conservation.json``
                     matches the manifest.
2. ``conservation``  object conservation re-checked from the partition files and the
                     *release* files (``pzpipe.export.check_conservation``): every input
                     row counted once (kept or cut by reason), same ids in the same
                     order for every algorithm, ids unique; the totals equal the ones
                     recorded in the manifest; the input files still have the recorded
                     row counts.
3. ``models``        sha256 of every model now = manifest = model sidecar
                     (``model.json``) = the ``model_sha256`` recorded in every release
                     file of that algorithm.
4. ``recompute``     a seeded random sample of chunks per algorithm is re-estimated from
                     the partition row group with the recorded config and the models
                     (``algorithms.Runner`` + ``estimate.estimate_table``, one BLAS
                     thread like the estimate workers) and compared with the stored row
                     group, column by column, bit for bit (NaN == NaN). ``tolerance``
                     states per algorithm what is accepted: all are 0 (bit-identical),
                     because every estimator is deterministic once the runner seeds the
                     random generators RAIL leaves unseeded (``algorithms.Runner``).
5. ``config``        the config in force now vs the recorded one (WARN if different:
                     the recomputation always uses the recorded config).
6. ``packages``      package versions now vs recorded in the manifest and the model
                     sidecars, and the code version (git commit, dirty flag). Differences
                     are WARN, not FAIL: a newer library may still reproduce the release,
                     and the ``recompute`` check says whether it does.

The audit FAILS (``PipelineError`` after the report is written, so the Snakemake rule
fails) when any check fails; WARN never fails it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import PipelineError, provenance

log = logging.getLogger(__name__)

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"

# Accepted difference between a recomputed chunk and the stored one, per algorithm
# (pzpipe.algorithms: Algorithm.audit_tolerance). 0 = bit-identical (every column, NaN ==
# NaN). A non-zero value would be an absolute tolerance on the point-estimate columns and
# on the decoded PDFs.
def tolerance(algo: str) -> float:
    from . import algorithms

    a = algorithms.REGISTRY.get(algo)
    return float(a.audit_tolerance) if a is not None else 0.0


def tolerances() -> dict[str, float]:
    from . import algorithms

    return {name: tolerance(name) for name in algorithms.REGISTRY}
RELEASE_META_FILES = ("manifest.json", "conservation.json")
SNAKEMAKE_MARKERS = (".snakemake_timestamp",)     # written by Snakemake in directory() outputs


class _Check:
    def __init__(self, name: str, what: str):
        self.name, self.what = name, what
        self.status = PASS
        self.details: list[str] = []
        self.failures: list[str] = []
        self.data: dict = {}

    def fail(self, msg: str):
        self.status = FAIL
        self.details.append(msg)
        self.failures.append(msg)

    def warn(self, msg: str):
        if self.status == PASS:
            self.status = WARN
        self.details.append(msg)

    def info(self, msg: str):
        self.details.append(msg)

    def as_dict(self) -> dict:
        return {"check": self.name, "what": self.what, "status": self.status,
                "details": self.details, "failures": self.failures,
                **({"data": self.data} if self.data else {})}


# ----------------------------------------------------------------------------- helpers
def _file_meta(path: str) -> dict:
    md = pq.ParquetFile(path).metadata.metadata or {}
    return json.loads(md.get(b"pzpipe", b"{}"))


def _release_files(manifest: dict, release_dir: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for f in manifest.get("files", []):
        out[f["algorithm"]][f["batch"]] = str(release_dir / f["path"])
    return dict(out)


def _bits(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """Float columns as their raw bit patterns (so NaN == NaN and -0.0 != 0.0)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_floating(col.type):
        arr = col.to_numpy(zero_copy_only=False)
        return arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    return None


def _identical(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    if a.type != b.type or len(a) != len(b):
        return False
    ba, bb = _bits(a), _bits(b)
    if ba is not None:
        na = a.combine_chunks().is_null().to_numpy(zero_copy_only=False)
        nb = b.combine_chunks().is_null().to_numpy(zero_copy_only=False)
        return bool(np.array_equal(ba, bb) and np.array_equal(na, nb))
    aa, bb2 = a.combine_chunks(), b.combine_chunks()
    if pa.types.is_list(aa.type) or pa.types.is_large_list(aa.type) or \
            pa.types.is_fixed_size_list(aa.type):
        # compare structure, then values bit for bit
        if not np.array_equal(aa.is_null().to_numpy(zero_copy_only=False),
                              bb2.is_null().to_numpy(zero_copy_only=False)):
            return False
        if not pa.types.is_fixed_size_list(aa.type):
            if aa.value_lengths().to_pylist() != bb2.value_lengths().to_pylist():
                return False
        return _identical(pa.chunked_array([aa.flatten()]), pa.chunked_array([bb2.flatten()]))
    return aa.equals(bb2)


def compare_tables(stored: pa.Table, recomputed: pa.Table, zgrid: np.ndarray,
                   tolerance: float = 0.0) -> tuple[bool, list[str], dict]:
    """(ok, differences, stats) of a recomputed chunk vs the stored one."""
    diffs, stats = [], {}
    if stored.num_rows != recomputed.num_rows:
        return False, [f"{stored.num_rows} rows stored, {recomputed.num_rows} recomputed"], stats
    if stored.schema.names != recomputed.schema.names:
        return False, [f"columns differ: stored {stored.schema.names}, recomputed "
                       f"{recomputed.schema.names}"], stats
    for name in stored.schema.names:
        a, b = stored.column(name), recomputed.column(name)
        if _identical(a, b):
            continue
        if name == "pdf":
            from . import pdfstore

            pa_, pb = (pdfstore.decode(x.combine_chunks(), zgrid) for x in (a, b))
            d = float(np.nanmax(np.abs(pa_ - pb))) if pa_.size else 0.0
        elif pa.types.is_floating(a.type):
            x, y = (np.asarray(c.to_numpy(), dtype=np.float64) for c in (a, b))
            same_nan = np.isnan(x) == np.isnan(y)
            d = float(np.nanmax(np.abs(x - y))) if np.all(same_nan) and x.size else float("inf")
        else:
            d = float("inf")        # ids, flags: must be identical
        stats[name] = d
        nbad = "?"
        try:
            ne = pa.compute.not_equal(a, b).combine_chunks().to_numpy(zero_copy_only=False)
            nbad = int(np.sum(ne))
        except Exception:  # noqa: BLE001 - list columns have no not_equal kernel
            pass
        if tolerance > 0 and np.isfinite(d) and d <= tolerance and name not in ("object_id", "flags"):
            continue
        diffs.append(f"column '{name}' differs ({nbad} rows, max |diff| {d:.3g})")
    return not diffs, diffs, stats


# ----------------------------------------------------------------------------- checks
def check_manifest(release_dir: Path, manifest: dict) -> _Check:
    c = _Check("manifest", "every file listed in manifest.json exists with the recorded "
                           "size and sha256; no unlisted file in the release")
    listed = set()
    bad = 0
    for f in manifest.get("files", []):
        listed.add(f["path"])
        p = release_dir / f["path"]
        if not p.exists():
            c.fail(f"{f['path']}: listed in the manifest but missing")
            bad += 1
            continue
        size = p.stat().st_size
        sha = provenance.sha256_file(str(p))
        if size != f["bytes"] or sha != f["sha256"]:
            c.fail(f"{f['path']}: altered after the export (sha256 {sha[:12]}..., {size} bytes; "
                   f"the manifest records {f['sha256'][:12]}..., {f['bytes']} bytes)")
            bad += 1
    orphans = sorted(str(p.relative_to(release_dir)) for p in release_dir.rglob("*")
                     if p.is_file() and str(p.relative_to(release_dir)) not in listed
                     and p.name not in RELEASE_META_FILES + SNAKEMAKE_MARKERS)
    for o in orphans[:20]:
        c.fail(f"{o}: in the release directory but not in the manifest"
               + (" (temporary file of an interrupted write)" if ".tmp-" in o else ""))
    cons_path = release_dir / "conservation.json"
    if not cons_path.exists():
        c.fail("conservation.json is missing")
    else:
        try:
            if json.loads(cons_path.read_text()) != manifest.get("conservation"):
                c.fail("conservation.json differs from the manifest's 'conservation' record")
        except json.JSONDecodeError as exc:
            c.fail(f"conservation.json is not valid JSON ({exc})")
    c.data = {"files": len(listed), "bad": bad, "orphans": len(orphans)}
    if c.status == PASS:
        c.info(f"{len(listed)} files, sha256 and sizes match")
    return c


def _recorded_layout(manifest: dict, cfg: dict, c: _Check):
    """Layout of the recorded run: from the input files (footers) if they are readable,
    else from the row counts recorded in the manifest."""
    from .layout import Layout, make_layout

    lay_rec = manifest.get("layout", {})
    rec_files = [(f["path"], f["rows"]) for f in manifest.get("inputs", {}).get("files", [])]
    try:
        layout = make_layout(cfg)
    except PipelineError as exc:
        c.warn(f"input files not readable ({exc}); using the row counts recorded in the "
               f"manifest")
        return Layout(rec_files, lay_rec["chunk_rows"], lay_rec["chunks_per_batch"])
    n_rec = manifest.get("inputs", {}).get("n_files", len(rec_files))
    if layout.files[:len(rec_files)] != rec_files or len(layout.files) != n_rec:
        changed = [f"{p}: {n} rows now" for (p, n), r in zip(layout.files, rec_files) if (p, n) != r]
        c.fail(f"the inputs changed since the release: {changed[:5] or 'different file list'}")
    return layout


def check_conservation(release_dir: Path, manifest: dict, cfg: dict,
                       partition_files: dict[str, str]) -> _Check:
    from . import export

    c = _Check("conservation", "every input object exactly once (kept or cut by reason), "
                               "same ids in every algorithm, ids unique; totals = manifest")
    layout = _recorded_layout(manifest, cfg, c)
    files = _release_files(manifest, release_dir)
    missing = [f"{a}/{b}" for a in files for b in partition_files if b not in files[a]]
    if missing:
        c.fail(f"release files missing for {missing[:10]}")
    try:
        rep = export.check_conservation(layout, partition_files, files, verify_ids=True)
    except PipelineError as exc:
        c.fail(str(exc).replace(":\n  ", ": ").replace("\n  ", "; "))
        return c
    except (OSError, pa.ArrowException) as exc:
        c.fail(f"cannot read the partition/release files: {exc}")
        return c
    rec = manifest.get("conservation", {})
    for key in ("objects_in", "objects_out", "cut_by_reason", "duplicate_ids"):
        if rep.get(key) != rec.get(key):
            c.fail(f"{key} = {rep.get(key)} now, manifest records {rec.get(key)}")
    c.data = {k: rep[k] for k in ("objects_in", "objects_out", "cut_by_reason")}
    if c.status != FAIL:
        c.info(f"{rep['objects_in']} objects in = {rep['objects_out']} out + "
               f"{sum(rep['cut_by_reason'].values())} cut {rep['cut_by_reason']}; "
               f"{len(files)} algorithms")
    return c


def check_models(release_dir: Path, manifest: dict, model_files: dict[str, str]) -> _Check:
    c = _Check("models", "model sha256 now = manifest = model.json sidecar = model_sha256 "
                         "in every release file")
    files = _release_files(manifest, release_dir)
    for algo, rec in sorted(manifest.get("models", {}).items()):
        path = model_files.get(algo, rec["path"])
        if not os.path.exists(path):
            c.fail(f"{algo}: model '{path}' is missing")
            continue
        sha = provenance.sha256_file(path)
        if sha != rec["sha256"]:
            c.fail(f"{algo}: model '{path}' sha256 {sha[:16]}... differs from the manifest's "
                   f"{rec['sha256'][:16]}... (the model was replaced or retrained)")
        side = Path(path).with_name("model.json")
        if side.exists():
            s = json.loads(side.read_text()).get("model_sha256")
            if s != sha:
                c.fail(f"{algo}: sidecar {side} records model_sha256 {str(s)[:16]}..., the "
                       f"model file has {sha[:16]}...")
        else:
            c.warn(f"{algo}: no sidecar {side}")
        wrong = [b for b, f in sorted(files.get(algo, {}).items())
                 if os.path.exists(f) and _file_meta(f).get("model_sha256") != rec["sha256"]]
        if wrong:
            c.fail(f"{algo}: release files {wrong[:5]} were estimated with a model other "
                   f"than the manifest's")
    if c.status == PASS:
        c.info(f"{len(manifest.get('models', {}))} models match")
    return c


def _chunk_table(partition_files):
    """[(batch, chunk index, partition row group)] for every non-empty chunk."""
    from .partition import read_meta

    out = []
    for batch, pfile in sorted(partition_files.items()):
        for ch in read_meta(pfile)["chunks"]:
            if ch["row_group"] is not None:
                out.append((batch, ch["chunk"], ch["row_group"]))
    return out


def check_recompute(release_dir: Path, manifest: dict, cfg: dict,
                    partition_files: dict[str, str], model_files: dict[str, str],
                    sample_chunks: int = 2, seed: int = 0, max_rows: int | None = None) -> _Check:
    from . import algorithms, estimate
    from .config import zgrid as make_zgrid

    c = _Check("recompute", f"{sample_chunks} random chunk(s) per algorithm (seed {seed}) "
                            f"re-estimated from the partition with the recorded config and "
                            f"models, compared with the stored output")
    files = _release_files(manifest, release_dir)
    chunks = _chunk_table(partition_files)
    bits = int(cfg["estimate"]["pdf_bits"])
    zg = make_zgrid(cfg)
    rng = np.random.default_rng(seed)
    c.data = {"seed": seed, "sample_chunks": sample_chunks, "max_rows": max_rows,
              "tolerance": {}, "chunks": {}}
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(1)
    except ImportError:  # pragma: no cover
        limiter = None
    try:
        for algo in sorted(files):
            tol = tolerance(algo)
            c.data["tolerance"][algo] = tol
            k = min(sample_chunks, len(chunks))
            pick = sorted(rng.choice(len(chunks), k, replace=False).tolist()) if k else []
            c.data["chunks"][algo] = [chunks[i][1] for i in pick]
            if not pick:
                continue
            model = model_files.get(algo, manifest["models"][algo]["path"])
            try:
                runner = algorithms.Runner(algorithms.get(algo), model, cfg, name="audit")
            except Exception as exc:  # noqa: BLE001 - any failure to load is a failed check
                c.fail(f"{algo}: cannot load model '{model}' ({type(exc).__name__}: {exc})")
                continue
            for i in pick:
                batch, chunk, rg = chunks[i]
                data = estimate._read_row_group(partition_files[batch], rg)
                flags = data.pop("flags")
                stored_file = files[algo].get(batch)
                if stored_file is None or not os.path.exists(stored_file):
                    c.fail(f"{algo} chunk {chunk}: no release file for batch {batch}")
                    continue
                pf = pq.ParquetFile(stored_file)
                if rg >= pf.metadata.num_row_groups:
                    c.fail(f"{algo} chunk {chunk}: {stored_file} has no row group {rg}")
                    continue
                stored = pf.read_row_group(rg)
                # a prefix of the chunk gives the same results for per-object estimators;
                # chunk-coupled ones are always recomputed whole
                if max_rows and not getattr(algorithms.get(algo), "chunk_coupled", False):
                    data = {key: v[:max_rows] for key, v in data.items()}
                    flags = flags[:max_rows]
                    stored = stored.slice(0, max_rows)
                try:
                    # exactly what estimate._work does in an estimate worker
                    kw = ({"subchunk_rows": cfg["estimate"]["subchunk_rows"]}
                          if "subchunk_rows" in cfg["estimate"] else {})
                    new = estimate.estimate_table(runner, data, flags, chunk, bits, **kw)
                except Exception as exc:  # noqa: BLE001
                    c.fail(f"{algo} chunk {chunk}: re-estimation failed "
                           f"({type(exc).__name__}: {exc})")
                    continue
                ok, diffs, _ = compare_tables(stored.replace_schema_metadata(None),
                                              new.replace_schema_metadata(None), zg, tol)
                where = f"{algo} chunk {chunk} ({os.path.relpath(stored_file, release_dir)} " \
                        f"row group {rg}, {new.num_rows} objects)"
                if ok:
                    c.info(f"{where}: identical" if tol == 0 else f"{where}: within {tol}")
                else:
                    c.fail(f"{where}: recomputed output differs from the stored one: "
                           + "; ".join(diffs))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    return c


def check_config(manifest: dict, current_cfg: dict | None) -> _Check:
    from .config import config_hash

    c = _Check("config", "config in force now vs the config recorded in the manifest")
    rec = manifest.get("config")
    if rec is None:
        c.fail("the manifest records no config")
        return c
    if config_hash(rec) != manifest.get("config_hash"):
        c.fail(f"the manifest's config does not hash to its config_hash "
               f"{str(manifest.get('config_hash'))[:16]}...: the manifest was edited")
    if current_cfg is not None:
        now = config_hash(current_cfg)
        if now != manifest.get("config_hash"):
            diff = sorted(k for k in set(rec) | set(current_cfg)
                          if json.dumps(rec.get(k), sort_keys=True, default=str)
                          != json.dumps(current_cfg.get(k), sort_keys=True, default=str))
            c.warn(f"the current config differs from the recorded one in {diff}; the audit "
                   f"used the recorded config")
    if c.status == PASS:
        c.info(f"config_hash {manifest.get('config_hash', '')[:16]}...")
    return c


def check_packages(manifest: dict, model_files: dict[str, str]) -> _Check:
    c = _Check("packages", "package and code versions now vs recorded (differences are "
                           "WARN, not FAIL: the recompute check shows whether they matter)")
    now = provenance.package_versions()
    rec = manifest.get("packages", {})
    diff = {k: (rec.get(k), now.get(k)) for k in sorted(set(rec) | set(now))
            if rec.get(k) != now.get(k)}
    for k, (a, b) in diff.items():
        c.warn(f"{k}: recorded {a}, now {b}")
    for algo, path in sorted(model_files.items()):
        side = Path(path).with_name("model.json")
        if side.exists():
            sp = json.loads(side.read_text()).get("packages", {})
            d = sorted(k for k in sp if sp.get(k) != rec.get(k))
            if d:
                c.warn(f"{algo}: model trained with different versions of {d} than the export")
    code_rec = manifest.get("code", {})
    code_now = provenance.code_version()
    if code_rec.get("git_dirty"):
        c.warn(f"the release was made from a checkout with uncommitted changes "
               f"(commit {code_rec.get('git_commit')}, dirty)")
    if code_rec.get("git_commit") != code_now.get("git_commit") or \
            code_rec.get("pzpipe") != code_now.get("pzpipe"):
        c.warn(f"code version: recorded {code_rec}, now {code_now}")
    c.data = {"differences": {k: list(v) for k, v in diff.items()}, "code_recorded": code_rec,
              "code_now": code_now}
    if c.status == PASS:
        c.info(f"{len(now)} packages and the code version ({code_now.get('git_commit')}) "
               f"match")
    return c


# ----------------------------------------------------------------------------- report
def to_markdown(report: dict) -> str:
    lines = [f"# Audit of release `{report['release']}`: {report['status']}", "",
             f"Release directory: `{report['release_dir']}`  ",
             f"Recorded config_hash: `{report.get('config_hash')}`  ",
             f"Recompute sample: {report['sample_chunks']} chunk(s) per algorithm, seed "
             f"{report['seed']}; tolerance per algorithm: "
             + ", ".join(f"{a} {t:g}" for a, t in sorted(tolerances().items()))
             + " (0 = bit-identical)", "",
             "| check | status | what |", "|---|---|---|"]
    for ch in report["checks"]:
        lines.append(f"| {ch['check']} | **{ch['status']}** | {ch['what']} |")
    lines.append("")
    for ch in report["checks"]:
        lines.append(f"## {ch['check']}: {ch['status']}")
        lines.append("")
        lines += [f"- {d}" for d in ch["details"]] or ["- (no details)"]
        lines.append("")
    return "\n".join(lines)


def audit(release_dir: str, partition_files: dict[str, str], model_files: dict[str, str],
          current_cfg: dict | None = None, sample_chunks: int = 2, seed: int = 0,
          max_rows: int | None = None) -> dict:
    """Run every check and return the report dict (no files written)."""
    rdir = Path(release_dir)
    checks: list[_Check] = []
    man_path = rdir / "manifest.json"
    try:
        manifest = json.loads(man_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        c = _Check("manifest", "manifest.json exists and is readable")
        c.fail(f"cannot read {man_path}: {exc}")
        checks.append(c)
        manifest = None
    if manifest is not None:
        from .config import validate_config

        checks.append(check_manifest(rdir, manifest))
        checks.append(check_config(manifest, current_cfg))
        try:
            cfg = validate_config(manifest["config"])
        except (PipelineError, KeyError) as exc:
            c = _Check("recorded-config", "the recorded config is valid")
            c.fail(f"the manifest's config is not valid: {exc}")
            checks.append(c)
            cfg = None
        if cfg is not None:
            checks.append(check_conservation(rdir, manifest, cfg, partition_files))
            checks.append(check_models(rdir, manifest, model_files))
            checks.append(check_recompute(rdir, manifest, cfg, partition_files, model_files,
                                          sample_chunks, seed, max_rows))
        checks.append(check_packages(manifest, model_files))
    status = FAIL if any(c.status == FAIL for c in checks) else PASS
    return {"status": status, "release": (manifest or {}).get("release"),
            "release_dir": str(release_dir), "config_hash": (manifest or {}).get("config_hash"),
            "sample_chunks": sample_chunks, "seed": seed, "max_rows": max_rows,
            "tolerance": tolerances(), "checks": [c.as_dict() for c in checks],
            "packages_now": provenance.package_versions(),
            "code_now": provenance.code_version()}


def run(release_dir: str, partition_files: dict[str, str], model_files: dict[str, str],
        out_md: str, out_json: str, current_cfg: dict | None = None, sample_chunks: int = 2,
        seed: int = 0, max_rows: int | None = None, raise_on_fail: bool = True,
        report_copy: str | None = None) -> dict:
    """Audit ``release_dir``, write ``out_md`` and ``out_json``; raise PipelineError when a
    check FAILS (after writing the report, its copy ``report_copy`` and logging it).

    Snakemake deletes the outputs of a failed job: ``report_copy`` (a ``log:`` file of
    the rule) keeps the markdown report of a failed audit."""
    from .io import atomic_path, write_json_atomic

    report = audit(release_dir, partition_files, model_files, current_cfg, sample_chunks,
                   seed, max_rows)
    md = to_markdown(report)
    with atomic_path(out_md) as tmp:
        Path(tmp).write_text(md + "\n")
    write_json_atomic(out_json, report)
    if report_copy:
        with atomic_path(report_copy) as tmp:
            Path(tmp).write_text(md + "\n")
    log.info("audit report:\n%s", md)
    if report["status"] == FAIL and raise_on_fail:
        failed = [f"{c['check']}: {c['failures'][0]}"
                  + (f" (+{len(c['failures']) - 1} more)" if len(c["failures"]) > 1 else "")
                  for c in report["checks"] if c["status"] == FAIL]
        raise PipelineError(f"audit of '{release_dir}' FAILED - " + " | ".join(failed)
                            + f". Full report: {report_copy or out_md}")
    return report


def run_release(batches: list[str], algos: list[str], cfg: dict, out_md: str, out_json: str,
                results: str = "results", report_copy: str | None = None) -> dict:
    """Rule entry point: audit ``<results>/release`` with the pipeline's file naming.

    Sample size and seed come from the config section ``audit`` (``sample_chunks``,
    ``seed``, ``max_rows``) when the schema has it, else 2 chunks per algorithm, seed 0.
    """
    a = cfg.get("audit") or {}
    return run(f"{results}/release",
               {b: f"{results}/partition/{b}.parquet" for b in batches},
               {x: f"{results}/models/{x}/model.pkl" for x in algos},
               out_md, out_json, current_cfg=cfg,
               sample_chunks=int(a.get("sample_chunks", 2)), seed=int(a.get("seed", 0)),
               max_rows=a.get("max_rows"), report_copy=report_copy)
