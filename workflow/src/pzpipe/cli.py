"""Command line: ``pzpipe describe|plan|summary|verify``.

    pzpipe describe /data/objects/*.parquet -o config/dr1_inputs.csv
        Input descriptor (path,nrows) from parquet footers / HDF5 shapes, read once, so
        that Snakemake (and every cluster job, which re-parses the workflow) gets the
        layout from one small CSV instead of opening 100k+ footers.
    pzpipe describe --hats /data/dp1/object_collection -o config/dp1_pixels.csv
        A HATS catalog's pixels and row counts (Norder,Npix,nrows) from its metadata;
        with inputs.hats and inputs.descriptor set, every parse reads this CSV only.
    pzpipe plan ...      see ``python -m pzpipe.planning.plan --help``
    pzpipe summary ...   see ``python -m pzpipe.stages.progress --help``
    pzpipe verify RELEASE [--no-hash]
        Check a copy of a release with the release alone (numpy + pyarrow: works in the
        light `pip install "pzpipe[read]"`): every file's size and sha256 against the
        manifest, row counts against partition_info.csv and conservation.json, every
        file's schema against _common_metadata, files not in the manifest. One line per
        problem; exit status 1 if any.
"""

from __future__ import annotations

import argparse
import csv
import sys
from concurrent.futures import ThreadPoolExecutor


def describe(paths: list[str], out: str, hdf5_group: str = "photometry", threads: int = 8) -> int:
    from .core.io import atomic_path
    from .run.layout import file_rows

    with ThreadPoolExecutor(threads) as ex:
        rows = list(ex.map(lambda p: file_rows(p, hdf5_group), paths))
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "nrows"])
            w.writerows(zip(paths, rows))
    print(f"{len(paths)} files, {sum(rows):,} rows -> {out}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "describe":
        ap = argparse.ArgumentParser(prog="pzpipe describe")
        ap.add_argument("paths", nargs="+")
        ap.add_argument("-o", "--out", required=True)
        ap.add_argument("--hdf5-group", default="photometry")
        ap.add_argument("--hats", action="store_true",
                        help="the path is a HATS catalog: write Norder,Npix,nrows")
        a = ap.parse_args(rest)
        if a.hats:
            from .run.layout import write_hats_descriptor

            n = write_hats_descriptor(a.paths[0], a.out)
            print(f"{n} pixels -> {a.out}")
            return 0
        return describe(a.paths, a.out, a.hdf5_group)
    if cmd == "plan":
        from .planning import plan

        return plan.main(rest) or 0
    if cmd == "summary":
        from .stages import progress

        return progress.main(rest) or 0
    if cmd == "verify":
        from pzpipe.release import verify

        return verify.main(rest)
    print(f"unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
