"""Byte-for-byte comparison of two directory trees, with the reason of each difference
(parquet columns / schema / key-value metadata, JSON fields, text lines)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

IGNORED = (".snakemake_timestamp",)      # written by Snakemake into directory() outputs


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), Snakemake's markers excepted."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name not in IGNORED}


def listing(root: Path) -> set[str]:
    """Every file and directory under ``root`` (relative paths)."""
    return {str(p.relative_to(root)) + ("/" if p.is_dir() else "")
            for p in Path(root).rglob("*") if p.name not in IGNORED}


def _json_diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _json_diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _json_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path or '.'}: {str(a)[:60]!r} != {str(b)[:60]!r}"]


def _kv_diff(ka: dict, kb: dict) -> list[str]:
    out = []
    for k in sorted(set(ka) | set(kb)):
        if ka.get(k) != kb.get(k):
            try:
                out += [f"metadata {k.decode()}{d}" for d in
                        _json_diff(json.loads(ka.get(k, b"{}")), json.loads(kb.get(k, b"{}")))]
            except ValueError:
                out.append(f"metadata {k.decode()}")
    return out


def explain(a: Path, b: Path) -> list[str]:
    """Why two files differ: parquet columns / schema / key-value metadata (also for
    metadata-only files such as ``_common_metadata``), JSON fields, or text lines."""
    if a.suffix == ".json":
        return _json_diff(json.loads(a.read_text()), json.loads(b.read_text()))
    try:
        fa, fb = pq.ParquetFile(a), pq.ParquetFile(b)
    except Exception:  # noqa: BLE001 - not parquet: compare as text
        fa = fb = None
    if fa is not None:
        out = []
        if fa.metadata.num_rows or fb.metadata.num_rows:
            ta, tb = fa.read(), fb.read()
            if ta.schema.remove_metadata() != tb.schema.remove_metadata():
                out.append("schema differs")
            else:
                out += [f"column {c}" for c in ta.column_names
                        if not ta.column(c).equals(tb.column(c))]
        elif not fa.schema_arrow.equals(fb.schema_arrow, check_metadata=False):
            out.append("schema differs")
        out += _kv_diff(fa.metadata.metadata or {}, fb.metadata.metadata or {})
        return out or ["same content, different bytes (encoding/compression)"]
    try:
        la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    except UnicodeDecodeError:
        return ["binary content differs"]
    diff = [f"line {i + 1}: {x[:70]!r} != {y[:70]!r}" for i, (x, y) in enumerate(zip(la, lb))
            if x != y]
    if len(la) != len(lb):
        diff.append(f"{len(la)} lines != {len(lb)} lines")
    return diff or ["same lines, different bytes (line endings?)"]


def compare_trees(a: Path, b: Path) -> dict[str, list[str]]:
    """{relative path: reasons} of every file that differs or exists on one side only."""
    fa, fb = files(a), files(b)
    diffs = {}
    for name in sorted(set(fa) | set(fb)):
        if name not in fa or name not in fb:
            diffs[name] = ["only in " + ("first" if name in fa else "second") + " tree"]
        elif fa[name] != fb[name]:
            diffs[name] = explain(Path(a) / name, Path(b) / name)
    return diffs


def format_diffs(diffs: dict[str, list[str]]) -> str:
    return "\n".join(f"  {k}: {'; '.join(v[:6])}" for k, v in diffs.items())
