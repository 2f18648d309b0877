"""``pzpipe verify RELEASE``: check a copy of a release with the release alone.

Needs only numpy and pyarrow (the light ``pip install "pzpipe[read]"``; no RAIL, numba,
Snakemake or lsdb is imported), so that a receiver - a data-access centre, a scientist
given the folder - can tell whether the copy they hold is the one that was published.

Checks, each problem reported as one line ``<path>: <problem>``:

1. **files**: every data file of ``manifest_files.csv`` exists with the recorded size and
   sha256; every other file the export wrote (catalog metadata, README, spec, ...) has the
   size and sha256 recorded in ``manifest.json["metadata_files"]``;
   ``manifest_files.csv`` itself has the sha256 in ``manifest.json["files"]``; a file in
   the folder that neither lists is reported as extra (exempt: ``manifest.json`` and
   Snakemake's ``.snakemake_timestamp`` marker).
2. **rows**: each data file's row count (parquet footer) is the manifest's; the pixel files
   of every catalog of the collection are exactly those of its ``partition_info.csv``; the
   catalog totals are its ``hats_nrows`` property; the photo-z catalog's total is
   ``conservation.json``'s ``objects_out`` (and ``objects_in = objects_out + cut``); the
   index has one row per released object.
3. **schema**: every data file's arrow schema (field metadata and the ``pzpipe`` schema
   metadata included) equals its catalog's ``dataset/_common_metadata``.

Memory: one manifest row at a time plus one entry per file of the folder (its relative
path); sha256 is streamed in 8 MiB blocks. ``--no-hash`` skips the sha256 (sizes, rows and
schemas only: seconds instead of a full read of the release).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import sys
from pathlib import Path

MANIFEST = "manifest.json"
FILES_CSV = "manifest_files.csv"
# not part of the release: Snakemake writes this marker into its directory() outputs
IGNORED = (".snakemake_timestamp",)
_PIXEL_RE = re.compile(r"dataset/Norder=(\d+)/Dir=(\d+)/Npix=(\d+)\.parquet$")


def sha256_file(path, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _properties(path: Path) -> dict:
    """A Java-style properties file (``key=value`` lines) as a dict."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _catalog_props(catdir: Path) -> dict:
    for name in ("hats.properties", "properties"):
        if (catdir / name).is_file():
            return _properties(catdir / name)
    return {}


def _partition_info(catdir: Path) -> set[tuple[int, int]] | None:
    p = catdir / "partition_info.csv"
    if not p.is_file():
        return None
    with open(p, newline="") as f:
        return {(int(r["Norder"]), int(r["Npix"])) for r in csv.DictReader(f)}


class Verifier:
    def __init__(self, release, check_hash: bool = True, out=None):
        self.root = Path(release)
        self.check_hash = check_hash
        self.problems: list[str] = []
        self.out = out

    def problem(self, path, msg: str) -> None:
        line = f"{path}: {msg}"
        self.problems.append(line)
        if self.out is not None:
            print(line, file=self.out, flush=True)

    # ------------------------------------------------------------------ helpers
    def _check_file(self, rel: str, size: int, sha: str | None) -> bool:
        f = self.root / rel
        if not f.is_file():
            self.problem(rel, "missing (listed in the manifest)")
            return False
        got = f.stat().st_size
        if got != int(size):
            self.problem(rel, f"size {got} bytes, the manifest records {int(size)}")
        elif self.check_hash and sha and sha256_file(f) != sha:
            self.problem(rel, "sha256 differs from the manifest (the content changed)")
        return True           # present: its rows and schema are checked too

    def _catalog_of(self, rel: str) -> str:
        """The catalog directory (relative) a data file belongs to: the part before
        ``dataset/``."""
        i = rel.find("dataset/")
        return rel[:i].rstrip("/") if i >= 0 else ""

    # ------------------------------------------------------------------ run
    def run(self) -> list[str]:
        import pyarrow.parquet as pq

        root = self.root
        if not (root / MANIFEST).is_file():
            self.problem(MANIFEST, f"missing: '{root}' is not a pzpipe release (or the copy "
                                   f"is incomplete)")
            return self.problems
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except ValueError as exc:
            self.problem(MANIFEST, f"not valid JSON ({exc})")
            return self.problems
        listed: set[str] = {MANIFEST, *IGNORED}
        files_info = manifest.get("files", {})
        # the file list itself
        if not (root / FILES_CSV).is_file():
            self.problem(FILES_CSV, "missing")
            return self.problems
        listed.add(FILES_CSV)
        if files_info.get("list_sha256"):
            self._check_file(FILES_CSV, files_info.get("list_bytes", (root / FILES_CSV).stat().st_size),
                             files_info["list_sha256"])
        else:
            self.problem(MANIFEST, "no sha256 of manifest_files.csv (files.list_sha256)")
        # metadata files (catalog metadata, README, spec, decoder, ...)
        for rel, rec in sorted((manifest.get("metadata_files") or {}).items()):
            listed.add(rel)
            self._check_file(rel, rec["bytes"], rec.get("sha256"))
        # the data files, streamed
        schemas: dict[str, object] = {}
        rows_by_cat: dict[str, int] = {}
        pixels_by_cat: dict[str, set] = {}
        n_files = n_bytes = 0
        with open(root / FILES_CSV, newline="") as fcsv:
            for row in csv.DictReader(fcsv):
                rel = row["path"]
                listed.add(rel)
                n_files += 1
                n_bytes += int(row["bytes"])
                if not self._check_file(rel, row["bytes"], row.get("sha256")):
                    continue
                cat = self._catalog_of(rel)
                try:
                    pf = pq.ParquetFile(root / rel)
                except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
                    self.problem(rel, f"not a readable parquet file ({exc})")
                    continue
                if row.get("rows") not in (None, "") and pf.metadata.num_rows != int(row["rows"]):
                    self.problem(rel, f"{pf.metadata.num_rows} rows, the manifest records "
                                      f"{row['rows']}")
                rows_by_cat[cat] = rows_by_cat.get(cat, 0) + pf.metadata.num_rows
                m = _PIXEL_RE.search(rel)
                if m:
                    pixels_by_cat.setdefault(cat, set()).add((int(m.group(1)), int(m.group(3))))
                if cat not in schemas:
                    cm = root / cat / "dataset" / "_common_metadata"
                    try:
                        schemas[cat] = pq.read_schema(cm)
                    except Exception as exc:  # noqa: BLE001
                        schemas[cat] = None
                        self.problem(os.path.relpath(cm, root), f"unreadable ({exc})")
                if schemas[cat] is not None and not pf.schema_arrow.equals(schemas[cat],
                                                                           check_metadata=True):
                    diff = _schema_diff(pf.schema_arrow, schemas[cat])
                    self.problem(rel, f"schema differs from {cat + '/' if cat else ''}"
                                      f"dataset/_common_metadata ({diff})")
        if files_info.get("count") is not None and n_files != files_info["count"]:
            self.problem(FILES_CSV, f"{n_files} files listed, manifest.json says "
                                    f"{files_info['count']}")
        if files_info.get("bytes") is not None and n_bytes != files_info["bytes"]:
            self.problem(FILES_CSV, f"{n_bytes} bytes listed, manifest.json says "
                                    f"{files_info['bytes']}")
        self._check_catalogs(manifest, rows_by_cat, pixels_by_cat)
        # extra files
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/")
                if rel not in listed:
                    self.problem(rel, "extra file, not in the manifest (added or left over; "
                                      "the published release does not have it)")
        return self.problems

    def _check_catalogs(self, manifest: dict, rows_by_cat: dict, pixels_by_cat: dict) -> None:
        coll = manifest.get("collection") or {}
        catalogs = {"primary": coll.get("primary", ""), "margin": coll.get("margin"),
                    "index": coll.get("index")}
        cons_path = self.root / "conservation.json"
        cons = None
        if cons_path.is_file():
            try:
                cons = json.loads(cons_path.read_text())
            except ValueError as exc:
                self.problem("conservation.json", f"not valid JSON ({exc})")
        else:
            self.problem("conservation.json", "missing")
        primary_rows = rows_by_cat.get(catalogs["primary"] or "", 0)
        if cons is not None:
            out = cons.get("objects_out")
            if out != primary_rows:
                self.problem("conservation.json", f"objects_out {out}, the photo-z catalog's "
                                                  f"files hold {primary_rows} rows")
            cut = sum(int(v) for v in (cons.get("cut_by_reason") or {}).values())
            if cons.get("objects_in") != (out or 0) + cut:
                self.problem("conservation.json", f"objects_in {cons.get('objects_in')} != "
                                                  f"objects_out {out} + cut {cut}")
            if not cons.get("ok", False):
                self.problem("conservation.json", "the export recorded a failed check")
        if manifest.get("rows") is not None and manifest["rows"] != primary_rows:
            self.problem(MANIFEST, f"rows {manifest['rows']}, the photo-z catalog's files hold "
                                   f"{primary_rows}")
        for kind, cat in catalogs.items():
            if cat is None:
                continue
            catdir = self.root / cat if cat else self.root
            label = f"{cat}/" if cat else ""
            props = _catalog_props(catdir)
            if not props and manifest.get("format", "hats") == "hats":
                self.problem(f"{label}hats.properties", "missing")
                continue
            rows = rows_by_cat.get(cat, 0)
            n = props.get("hats_nrows")
            if n is not None and int(n) != rows:
                self.problem(f"{label}hats.properties", f"hats_nrows {n}, the files hold {rows}")
            if kind == "index" and rows != primary_rows:
                self.problem(label or ".", f"the index has {rows} rows, the photo-z catalog "
                                           f"{primary_rows}")
            if kind == "index":
                continue
            pinfo = _partition_info(catdir)
            if pinfo is None:
                if manifest.get("format", "hats") == "hats":
                    self.problem(f"{label}partition_info.csv", "missing")
                continue
            have = pixels_by_cat.get(cat, set())
            for k, p in sorted(pinfo - have):
                self.problem(f"{label}partition_info.csv", f"lists pixel Norder={k} Npix={p}, "
                                                           f"which has no file in the manifest")
            for k, p in sorted(have - pinfo):
                self.problem(f"{label}partition_info.csv", f"lacks pixel Norder={k} Npix={p}, "
                                                           f"whose file is in the manifest")


def _schema_diff(a, b) -> str:
    an, bn = a.names, b.names
    if an != bn:
        return f"columns {an[:6]}... vs {bn[:6]}..."
    for fa, fb in zip(a, b):
        if not fa.equals(fb, check_metadata=True):
            return f"column {fa.name}: {fa.type} {dict(fa.metadata or {})!r:.80} vs {fb.type}"
    return "schema metadata differs"


def verify(release, check_hash: bool = True, out=None) -> list[str]:
    """The problems found in the release at ``release`` (empty list: it verifies)."""
    return Verifier(release, check_hash, out).run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pzpipe verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("release", help="the release directory (the folder with manifest.json)")
    ap.add_argument("--no-hash", action="store_true",
                    help="skip the sha256 of every file (sizes, rows and schemas only)")
    a = ap.parse_args(argv)
    problems = verify(a.release, check_hash=not a.no_hash, out=sys.stdout)
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {a.release}", file=sys.stderr)
        return 1
    print(f"OK: {a.release} verifies against its manifest"
          f"{' (sizes only: --no-hash)' if a.no_hash else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
