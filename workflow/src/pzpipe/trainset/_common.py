"""Shared by the training-set steps: constants, parquet/JSON writers with provenance,
input fingerprints, sky geometry and the "lowest id" ordering."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe.core.io import atomic_path, parquet_meta, write_json_atomic
from pzpipe.core.jobs import log_to as _log_to
from pzpipe.run.provenance import sha256_file

logger = logging.getLogger("pzpipe.trainset")

#: homogenised flag of a star (the homogenised galaxy scale is 0..4, 4 best)
STAR_FLAG = 6
#: allowed instrument types, in default priority order (best first)
INSTRUMENTS = ("spectroscopic", "grism", "photometric")
#: rejection reasons of :func:`compile_specz`, in the order they are tested; a row is
#: counted under its *first* failing reason in ``rejected`` (these sum to rows_in -
#: rows_out) and under every failing reason in ``rejected_any``
REJECT_REASONS = ("id_missing", "ra_nan", "ra_range", "dec_nan", "dec_range", "flag_unmapped",
                  "instrument_unknown", "z_nan", "z_negative", "z_above_zmax")
#: dedup_status values
DEDUP_STATUS = ("kept", "tie", "dropped")
#: parquet schema-metadata key holding the stage's provenance (chained upstream)
META_KEY = b"pzpipe_trainset"
#: columns contributed by the spec-z side to the crossmatch / train / test tables
SPECZ_COLUMNS = ("redshift", "z_flag", "survey", "specz_id", "specz_uid", "specz_ra", "specz_dec",
                 "specz_instrument", "specz_is_star")
#: loggers a step's ``log=`` file receives (with Python warnings)
LOGGERS = ("pzpipe", "lsdb", "hats", "hats_import", "py.warnings")


def log_to(path):
    """Send :data:`LOGGERS` and Python warnings to ``path`` (appended) for the block."""
    return _log_to(path, names=LOGGERS, warnings=True)


def _write_json(obj, path):
    write_json_atomic(path, obj, indent=1, sort_keys=False, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _write_parquet(df: pd.DataFrame, path, meta: dict):
    """Write ``df`` (no index) with ``meta`` under :data:`META_KEY`, atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    # LSDB hands back pyarrow-backed frames: store large_string as string
    schema = pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f
                        for f in table.schema], metadata=table.schema.metadata)
    table = table.cast(schema)
    md = dict(table.schema.metadata or {})
    md[META_KEY] = json.dumps(meta, default=_json_default, sort_keys=True).encode()
    table = table.replace_schema_metadata(md)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_meta(path) -> dict:
    """The pzpipe provenance stored in a parquet file written by this module."""
    return parquet_meta(path, META_KEY.decode())


def fingerprint(path, max_content_bytes: int = 64 << 20) -> dict:
    """Identify an input: a file by pzpipe.run.provenance.input_fingerprint (sha256 up to
    1 GiB, size and parquet footer beyond); a directory (HATS catalog, parquet
    dataset) by the sha256 of its sorted listing of ``(relative path, size, sha256 of
    the content if <= max_content_bytes else '-')``, so that TB-sized catalogs are
    identified without reading them."""
    p = Path(path)
    if p.is_file():
        from pzpipe.run.provenance import input_fingerprint

        return {"type": "file", **input_fingerprint(str(p))}
    h = hashlib.sha256()
    nfiles = nbytes = 0
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        size = f.stat().st_size
        digest = sha256_file(f) if size <= max_content_bytes else "-"
        h.update(f"{f.relative_to(p)}\t{size}\t{digest}\n".encode())
        nfiles += 1
        nbytes += size
    return {"path": str(p), "type": "directory", "files": nfiles, "bytes": nbytes,
            "sha256_listing": h.hexdigest()}


def versions() -> dict:
    """Package versions (pzpipe.run.provenance) plus those only the training set uses,
    and the pipeline's git commit."""
    from importlib.metadata import PackageNotFoundError, version

    from pzpipe.run.provenance import code_version, package_versions

    out = dict(package_versions())
    for name in ("dask", "distributed", "nested-pandas", "matplotlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["code"] = code_version()
    return out


def _unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    cd = np.cos(dec)
    return np.column_stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)])


def _chord(radius_arcsec: float) -> float:
    return 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)


def _id_sort_columns(ids: pd.Series) -> pd.DataFrame:
    """Sort keys implementing "lowest id": ids made only of digits compare as integers
    of any size (by length of the digits without leading zeros, then the digits) and
    come before other ids, which compare as strings."""
    s = ids.astype(str)
    digits = s.str.fullmatch(r"\d+").fillna(False).to_numpy(bool)
    stripped = s.str.lstrip("0").where(lambda x: x != "", "0")
    return pd.DataFrame({
        "_k0": (~digits).astype(np.int8),
        "_k1": np.where(digits, stripped.str.len().to_numpy(), 0).astype(np.int64),
        "_k2": np.where(digits, stripped.to_numpy(object), s.to_numpy(object)),
    }, index=ids.index)
