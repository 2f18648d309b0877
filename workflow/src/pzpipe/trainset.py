"""Training-set maker: spec-z compilation -> deduplication -> crossmatch -> split.

Five steps, one public function each (one Snakemake rule each, see
``workflow/rules/trainset.smk`` and ``docs/trainset.md``):

1. :func:`compile_specz` - read spec-z catalogs (parquet / CSV / FITS), rename their
   columns, homogenise flags (0-4, 4 best; :data:`STAR_FLAG` = 6 for stars) and
   instrument types, reject bad rows *counting them by reason*.
2. :func:`dedup_specz` - self-crossmatch (KD-tree on unit vectors, friends-of-friends
   groups), keep one row per group (best flag > instrument priority > lowest id).
3. :func:`import_photometry_hats` - import the photometric parquet files as a HATS
   collection (catalog + margin cache) with hats-import on a local dask cluster
   (skipped when the photometry is HATS already, see :func:`is_hats`).
4. :func:`crossmatch_specz` - LSDB crossmatch of the spec-z rows (left) against the
   photometry (right, with margin), nearest neighbour within 1"; a photometric object
   matched by several spec-z rows keeps one (best flag > distance > lowest id).
5. :func:`split_trainset` - seeded train/test split (optionally stratified in
   redshift bins) written as parquet and HATS, with summary, plot and provenance.

The in-memory cores (:func:`deduplicate`, :func:`resolve_multimatches`,
:func:`split_indices`) are public too, for tests and notebooks.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import PipelineError
from .config import resolve_path
from .io import atomic_path

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

#: defaults of the ``trainset:`` config section (see docs/trainset.schema.yaml)
DEFAULTS = {
    "enabled": False,
    "specz": {"zmax": 3.0, "catalogs": []},
    "dedup": {"radius_arcsec": 0.5, "instrument_priority": list(INSTRUMENTS), "star_rank": 4,
              "conflict_dz": 0.01},
    "photometry": {"path": None, "id_column": "id", "ra_column": "ra", "dec_column": "dec",
                   "columns": None, "margin_cache": None, "catalog_name": "photometry",
                   "pixel_threshold": 1_000_000, "highest_order": 10, "margin_arcsec": 5.0,
                   "margin_order": -1},
    "crossmatch": {"radius_arcsec": 1.0, "min_flag": 3, "keep_stars": False},
    "split": {"train_fraction": 0.7, "seed": 42, "stratify_zbins": None, "mag_column": None,
              "write_hats": True},
    "dask": {"threads": 4, "mem_mb": 8000, "scheduler": None, "tmp_dir": None},
}


# =============================================================================== helpers
def settings(config: dict | None) -> dict:
    """The ``trainset`` section of ``config`` (or ``config`` itself when it has no
    such key) merged over :data:`DEFAULTS` (two levels deep)."""
    section = (config or {}).get("trainset", config or {})
    out = copy.deepcopy(DEFAULTS)
    for key, val in (section or {}).items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key].update(val)
        else:
            out[key] = val
    return out


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None, level=logging.INFO):
    """Send the ``pzpipe``, ``lsdb``, ``hats`` and ``hats_import`` loggers and Python
    warnings to ``path`` (appended) for the duration of the block."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    names = ["pzpipe", "lsdb", "hats", "hats_import", "py.warnings"]
    loggers = [logging.getLogger(n) for n in names]
    old = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for lg, (lvl, _prop) in zip(loggers, old, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(lvl)
        handler.close()


@contextlib.contextmanager
def _atomic_dir(path):
    """Yield a temporary sibling path for a directory; on success replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    try:
        yield tmp
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
        raise
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _write_json(obj, path):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=False, default=_json_default)
            fh.write("\n")


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
    md = pq.read_schema(path).metadata or {}
    return json.loads(md[META_KEY]) if META_KEY in md else {}


def sha256_file(path, bufsize=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(path, max_content_bytes: int = 64 << 20) -> dict:
    """Identify an input: a file by pzpipe.provenance.input_fingerprint (sha256 up to
    1 GiB, size and parquet footer beyond); a directory (HATS catalog, parquet
    dataset) by the sha256 of its sorted listing of ``(relative path, size, sha256 of
    the content if <= max_content_bytes else '-')``, so that TB-sized catalogs are
    identified without reading them."""
    p = Path(path)
    if p.is_file():
        from .provenance import input_fingerprint

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
    """Package versions (pzpipe.provenance) plus those only the training set uses,
    and the pipeline's git commit."""
    from importlib.metadata import PackageNotFoundError, version

    from .provenance import code_version, package_versions

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


# ======================================================================= 1. compilation
def _norm_key(v):
    """Canonical string of a raw flag / instrument value: 4, 4.0, "4" and " 4 " -> "4"."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return None
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    s = str(v).strip()
    if s == "" or s.lower() in ("nan", "none", "null", "--"):
        return None
    try:
        f = float(s)
    except ValueError:
        return s
    if not np.isfinite(f):
        return None
    return str(int(f)) if f.is_integer() else repr(f)


def _homog_value(v) -> int:
    if isinstance(v, str) and v.strip().lower() == "star":
        return STAR_FLAG
    try:
        iv = int(v)
    except (TypeError, ValueError):
        raise PipelineError(f"homogenised flags are 0..4 or 'star'/{STAR_FLAG}, got {v!r}") from None
    if iv not in (0, 1, 2, 3, 4, STAR_FLAG) or float(v) != iv:
        raise PipelineError(f"homogenised flags are 0..4 or 'star'/{STAR_FLAG}, got {v!r}")
    return iv


def _map_values(raw: pd.Series, mapping: dict) -> np.ndarray:
    """Map ``raw`` through ``mapping`` (keys compared after :func:`_norm_key`); values
    not in the mapping give None."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    table = np.array([mapping.get(_norm_key(u)) for u in uniques] + [None], dtype=object)
    return table[codes]  # code -1 -> the trailing None


def _normalise_ids(raw: pd.Series) -> pd.Series:
    """Ids as strings; float ids that are integers lose the ".0"; None if missing."""
    if pd.api.types.is_float_dtype(raw.dtype):
        vals = raw.to_numpy(float)
        out = np.full(len(vals), None, dtype=object)
        fin = np.isfinite(vals)
        out[fin] = [str(int(x)) if float(x).is_integer() else repr(float(x)) for x in vals[fin]]
        return pd.Series(out, index=raw.index, dtype=object)
    if pd.api.types.is_integer_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype("int64").astype(str).astype(object)
    s = raw.map(lambda v: None if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v))
                else (v.decode() if isinstance(v, bytes) else str(v)).strip())
    return s.where(s.notna() & (s != ""), None).astype(object)


def read_table(path, fmt: str | None = None, columns: list[str] | None = None,
               read_kwargs: dict | None = None) -> pd.DataFrame:
    """Read a parquet, CSV or FITS table (format from the extension unless ``fmt``)."""
    path = str(path)
    kw = dict(read_kwargs or {})
    low = path.lower()
    if fmt is None:
        if low.endswith((".parquet", ".pq", ".parq")) or Path(path).is_dir():
            fmt = "parquet"
        elif low.endswith((".csv", ".csv.gz", ".csv.bz2", ".txt", ".tsv")):
            fmt = "csv"
        elif low.endswith((".fits", ".fit", ".fits.gz", ".fit.gz", ".fz")):
            fmt = "fits"
        else:
            raise PipelineError(f"cannot tell the format of {path}: set 'format' (parquet, csv, fits)")
    fmt = fmt.lower()
    if fmt == "parquet":
        return pd.read_parquet(path, columns=columns, **kw)
    if fmt == "csv":
        if low.endswith(".tsv"):
            kw.setdefault("sep", "\t")
        return pd.read_csv(path, usecols=columns, **kw)
    if fmt == "fits":
        from astropy.table import Table

        tab = Table.read(path, format="fits", **({"hdu": 1} | kw))
        if columns is not None:
            tab = tab[columns]
        out = {}
        for name in tab.colnames:
            col = tab[name]
            if getattr(col, "ndim", 1) > 1:
                continue
            if hasattr(col, "mask") and np.any(col.mask):
                arr = col.filled(np.nan if col.dtype.kind == "f" else None)
                arr = np.asarray(arr, dtype=float if col.dtype.kind in "fiu" else object)
            else:
                arr = np.asarray(col)
            if arr.dtype.kind == "S":
                arr = np.char.decode(arr, "utf-8")
            if arr.dtype.byteorder not in ("=", "|"):
                arr = arr.astype(arr.dtype.newbyteorder("="))
            out[name] = arr
        return pd.DataFrame(out)
    raise PipelineError(f"unknown format {fmt!r} for {path}")


def _check_catalog_cfg(cat: dict) -> None:
    for key in ("survey", "path", "columns"):
        if key not in cat:
            raise PipelineError(f"spec-z catalog config needs {key!r}: {cat}")
    cols = cat["columns"]
    for key in ("id", "ra", "dec", "z"):
        if not cols.get(key):
            raise PipelineError(f"spec-z catalog {cat['survey']}: columns.{key} is required")
    if not cols.get("flag") and cat.get("flag_value") is None:
        raise PipelineError(f"spec-z catalog {cat['survey']}: set columns.flag or flag_value")
    if bool(cat.get("instrument")) == bool(cat.get("instrument_column")):
        raise PipelineError(f"spec-z catalog {cat['survey']}: set exactly one of instrument, instrument_column")
    if cat.get("instrument") and cat["instrument"] not in INSTRUMENTS:
        raise PipelineError(f"spec-z catalog {cat['survey']}: instrument must be one of {INSTRUMENTS}")


def homogenise_catalog(df: pd.DataFrame, cat: dict, *, zmax: float = 3.0) -> tuple[pd.DataFrame, dict]:
    """Rename, homogenise and validate one spec-z catalog already read into ``df``.

    Returns (good rows with the compiled columns except ``uid``, per-catalog report)."""
    _check_catalog_cfg(cat)
    cols = cat["columns"]
    n = len(df)
    ids = _normalise_ids(df[cols["id"]])
    ra = pd.to_numeric(df[cols["ra"]], errors="coerce").to_numpy(float)
    dec = pd.to_numeric(df[cols["dec"]], errors="coerce").to_numpy(float)
    z = pd.to_numeric(df[cols["z"]], errors="coerce").to_numpy(float)

    if cols.get("flag"):
        raw_flag = df[cols["flag"]]
        if cat.get("flag_map") is not None:
            mapping = {_norm_key(k): _homog_value(v) for k, v in cat["flag_map"].items()}
        else:  # already homogenised
            mapping = {str(v): v for v in (0, 1, 2, 3, 4, STAR_FLAG)}
        hflag = _map_values(raw_flag, mapping)
        codes, uniques = pd.factorize(raw_flag, use_na_sentinel=True)
        flag_raw = np.array([_norm_key(u) for u in uniques] + [None], dtype=object)[codes]
    else:
        hflag = np.full(n, _homog_value(cat["flag_value"]), dtype=object)
        flag_raw = np.full(n, None, dtype=object)
    flag_ok = np.array([v is not None for v in hflag], bool)

    if cat.get("instrument_column"):
        raw_ins = df[cat["instrument_column"]]
        imap = cat.get("instrument_map")
        if imap:
            mapping = {}
            for k, v in imap.items():
                if v not in INSTRUMENTS:
                    raise PipelineError(f"instrument_map value {v!r} not in {INSTRUMENTS}")
                mapping[_norm_key(k)] = v
        else:
            mapping = {i: i for i in INSTRUMENTS}
            raw_ins = raw_ins.map(lambda v: _norm_key(v).lower() if _norm_key(v) else None)
        instrument = _map_values(raw_ins, mapping)
    else:
        instrument = np.full(n, cat["instrument"], dtype=object)
    ins_ok = np.array([v is not None for v in instrument], bool)

    with np.errstate(invalid="ignore"):
        tests = {
            "id_missing": ids.isna().to_numpy(),
            "ra_nan": ~np.isfinite(ra),
            "ra_range": np.isfinite(ra) & ((ra < 0) | (ra > 360)),
            "dec_nan": ~np.isfinite(dec),
            "dec_range": np.isfinite(dec) & ((dec < -90) | (dec > 90)),
            "flag_unmapped": ~flag_ok,
            "instrument_unknown": ~ins_ok,
            "z_nan": ~np.isfinite(z),
            "z_negative": np.isfinite(z) & (z < 0),
            "z_above_zmax": np.isfinite(z) & (z > zmax),
        }
    assert tuple(tests) == REJECT_REASONS
    bad = np.zeros(n, bool)
    rejected, rejected_any = {}, {}
    for reason, mask in tests.items():
        first = mask & ~bad
        rejected[reason] = int(first.sum())
        rejected_any[reason] = int(mask.sum())
        bad |= mask
    good = ~bad
    hflag_good = hflag[good].astype(np.int8)
    out = pd.DataFrame({
        "survey": pd.Series(cat["survey"], index=range(int(good.sum())), dtype=object),
        "specz_id": ids.to_numpy(object)[good],
        "ra": np.where(ra[good] == 360.0, 0.0, ra[good]),
        "dec": dec[good],
        "redshift": z[good],
        "z_flag": hflag_good,
        "z_flag_raw": flag_raw[good],
        "instrument": instrument[good].astype(object),
        "is_star": hflag_good == STAR_FLAG,
        "source_row": np.flatnonzero(good).astype(np.int64),
    })
    rep = {
        "survey": cat["survey"], "path": str(cat["path"]),
        "rows_in": n, "rows_out": int(good.sum()), "rows_rejected": int(bad.sum()),
        "rejected": rejected, "rejected_any": rejected_any,
        "stars": int(out["is_star"].sum()),
        "z_flag": {str(k): int(v) for k, v in sorted(out["z_flag"].value_counts().items())},
        "instrument": {str(k): int(v) for k, v in sorted(out["instrument"].value_counts().items())},
    }
    return out, rep


def compile_specz(catalogs: list[dict], output, report, *, zmax: float = 3.0, log: str | None = None) -> dict:
    """Compile spec-z catalogs into one parquet file plus a JSON report.

    ``catalogs``: list of dicts with keys ``survey`` (unique name), ``path``,
    ``format`` (optional: parquet / csv / fits; default from the extension),
    ``read_kwargs`` (optional, passed to the reader, e.g. ``{"hdu": 2}`` or
    ``{"sep": ";"}``), ``columns`` (``id``, ``ra``, ``dec``, ``z``, ``flag``),
    ``flag_map`` (raw flag -> 0..4 or ``"star"``; null: flags are homogenised already,
    6 = star), ``flag_value`` (fixed flag when there is no flag column), and either
    ``instrument`` (fixed: spectroscopic / grism / photometric) or
    ``instrument_column`` with an optional ``instrument_map`` (raw value -> type).

    Output columns: ``uid`` (int64, row number of the compilation), ``survey``,
    ``specz_id`` (string), ``ra``, ``dec`` (deg), ``redshift``, ``z_flag`` (int8,
    0..4 or 6 = star), ``z_flag_raw`` (normalised raw flag, string), ``instrument``,
    ``is_star``, ``source_row`` (row in the input file). Rejected rows are counted
    per catalog and reason (:data:`REJECT_REASONS`) in the report.
    """
    with log_to(log):
        t0 = time.time()
        surveys = [c.get("survey") for c in catalogs]
        if len(set(surveys)) != len(surveys):
            raise PipelineError(f"spec-z survey names must be unique: {surveys}")
        if not catalogs:
            raise PipelineError("no spec-z catalogs configured (trainset.specz.catalogs)")
        parts, reps, inputs = [], [], []
        for cat in catalogs:
            _check_catalog_cfg(cat)
            cols = cat["columns"]
            need = [cols[k] for k in ("id", "ra", "dec", "z", "flag") if cols.get(k)]
            if cat.get("instrument_column"):
                need.append(cat["instrument_column"])
            need = list(dict.fromkeys(need))
            path = resolve_path(str(cat["path"]))
            if not os.path.exists(path):
                raise PipelineError(f"spec-z catalog {cat['survey']}: file {path} not found")
            try:
                df = read_table(path, cat.get("format"), need, cat.get("read_kwargs"))
            except (KeyError, ValueError) as exc:
                raise PipelineError(f"spec-z catalog {cat['survey']}: cannot read columns {need} "
                                    f"from {path}: {exc}") from exc
            good, rep = homogenise_catalog(df, cat, zmax=zmax)
            fp = fingerprint(path)
            rep["sha256"] = fp.get("sha256", fp.get("sha256_listing"))
            inputs.append(fp)
            for reason, k in rep["rejected"].items():
                if k:
                    logger.warning("%s: rejected %d rows: %s", cat["survey"], k, reason)
            logger.info("%s: %d rows in, %d kept, %d rejected", cat["survey"], rep["rows_in"],
                     rep["rows_out"], rep["rows_rejected"])
            parts.append(good)
            reps.append(rep)
        compiled = pd.concat(parts, ignore_index=True)
        compiled.insert(0, "uid", np.arange(len(compiled), dtype=np.int64))
        total = {"rows_in": sum(r["rows_in"] for r in reps), "rows_out": len(compiled),
                 "rows_rejected": sum(r["rows_rejected"] for r in reps),
                 "rejected": {k: sum(r["rejected"][k] for r in reps) for k in REJECT_REASONS},
                 "stars": int(compiled["is_star"].sum())}
        params = {"zmax": zmax, "catalogs": catalogs}
        meta = {"stage": "specz_compile", "parameters": params, "inputs": inputs, "upstream": []}
        _write_parquet(compiled, output, meta)
        rep = {"stage": "specz_compile", "output": str(output), "zmax": zmax, "catalogs": reps,
               "total": total, "inputs": inputs, "seconds": round(time.time() - t0, 3)}
        _write_json(rep, report)
        return rep


# ====================================================================== 2. deduplication
def friends_of_friends(ra, dec, radius_arcsec: float) -> np.ndarray:
    """Group label (connected components of the "closer than radius" graph) per
    position; labels are numbered in order of first appearance (deterministic)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(ra)
    if n == 0:
        return np.zeros(0, np.int64)
    xyz = _unit_vectors(ra, dec)
    pairs = cKDTree(xyz).query_pairs(_chord(radius_arcsec), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return remap[labels].astype(np.int64)


def deduplicate(df: pd.DataFrame, *, radius_arcsec: float = 0.5,
                instrument_priority=INSTRUMENTS, star_rank: int = 4) -> pd.DataFrame:
    """Deduplicate a compiled spec-z table (columns of :func:`compile_specz`).

    Rows closer than ``radius_arcsec`` are linked; groups are the connected components
    (friends of friends: a chain can be wider than the radius). In each group the rows
    are ranked by

    1. homogenised flag, highest first (a star counts as ``star_rank``);
    2. instrument, in ``instrument_priority`` order (spectroscopic > grism >
       photometric by default);
    3. lowest ``specz_id`` (digit-only ids compare as integers and come before other
       ids, which compare as strings); then ``uid`` (configuration order of the
       catalogs, then row order), which makes the order total.

    The first row is kept. Added columns: ``dedup_group`` (smallest ``uid`` of the
    group), ``dedup_n`` (group size), ``dedup_status``: ``kept`` (alone, or won on
    flag or instrument), ``tie`` (kept, but the runner-up had the same flag rank *and*
    the same instrument priority, so the decision went to the id tie-breaker),
    ``dropped`` (every other member); ``dedup_rule`` (``single``, ``flag``,
    ``instrument`` or ``id``: which rule separated the winner from the runner-up),
    ``dedup_kept_uid`` (uid of the group's kept row) and ``dedup_dz``
    (``|z - z_kept| / (1 + z_kept)``).
    """
    df = df.reset_index(drop=True).copy()
    n = len(df)
    labels = friends_of_friends(df["ra"].to_numpy(), df["dec"].to_numpy(), radius_arcsec)
    prio = {ins: i for i, ins in enumerate(instrument_priority)}
    unknown = set(df["instrument"].unique()) - set(prio)
    if unknown:
        raise PipelineError(f"instrument types {unknown} missing from instrument_priority")
    rank = np.where(df["is_star"].to_numpy(bool), star_rank, df["z_flag"].to_numpy(np.int64))
    keys = _id_sort_columns(df["specz_id"])
    work = pd.DataFrame({"_g": labels, "_neg_rank": -rank,
                         "_prio": df["instrument"].map(prio).to_numpy(np.int64),
                         "_k0": keys["_k0"], "_k1": keys["_k1"], "_k2": keys["_k2"],
                         "_uid": df["uid"].to_numpy(np.int64), "_row": np.arange(n)})
    work = work.sort_values(["_g", "_neg_rank", "_prio", "_k0", "_k1", "_k2", "_uid"], kind="stable")
    g = work["_g"].to_numpy()
    first = np.ones(n, bool)
    first[1:] = g[1:] != g[:-1]
    pos_in_group = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    size = np.bincount(labels)
    sizes = size[g]
    # runner-up (second row of each group) vs winner
    win_idx = np.flatnonzero(first)
    rule_by_group = np.full(len(size), "single", dtype=object)
    multi = sizes[win_idx] > 1
    w = win_idx[multi]
    r_ = w + 1
    nr, pr = work["_neg_rank"].to_numpy(), work["_prio"].to_numpy()
    rule = np.where(nr[w] < nr[r_], "flag", np.where(pr[w] < pr[r_], "instrument", "id"))
    rule_by_group[g[w]] = rule
    status = np.where(pos_in_group == 0, "kept", "dropped").astype(object)
    status[(pos_in_group == 0) & (rule_by_group[g] == "id")] = "tie"
    kept_row = work["_row"].to_numpy()[win_idx][np.searchsorted(g[win_idx], g)]  # g sorted
    min_uid = pd.Series(work["_uid"].to_numpy()).groupby(g).transform("min").to_numpy()

    rows = work["_row"].to_numpy()
    out_status = np.empty(n, object)
    out_status[rows] = status
    out_rule = np.empty(n, object)
    out_rule[rows] = rule_by_group[g]
    out_kept = np.empty(n, np.int64)
    out_kept[rows] = kept_row
    out_group = np.empty(n, np.int64)
    out_group[rows] = min_uid
    out_n = np.empty(n, np.int32)
    out_n[rows] = sizes
    z = df["redshift"].to_numpy(float)
    zk = z[out_kept]
    df["dedup_group"] = out_group
    df["dedup_n"] = out_n
    df["dedup_status"] = out_status
    df["dedup_rule"] = out_rule
    df["dedup_kept_uid"] = df["uid"].to_numpy(np.int64)[out_kept]
    df["dedup_dz"] = np.abs(z - zk) / (1.0 + zk)
    return df


def dedup_specz(compiled, output, report, *, radius_arcsec: float = 0.5,
                instrument_priority=INSTRUMENTS, star_rank: int = 4, conflict_dz: float = 0.01,
                log: str | None = None) -> dict:
    """Deduplicate the compilation of :func:`compile_specz` (see :func:`deduplicate`).

    ``output`` keeps every row with its ``dedup_*`` columns (dropped rows included,
    for inspection); the next step uses the rows with ``dedup_status != "dropped"``.
    The report counts rows kept / tie / dropped per survey, which survey won over the
    dropped rows, groups by size and deciding rule, and groups whose members disagree
    (``dedup_dz > conflict_dz``, or stars mixed with galaxies).
    """
    with log_to(log):
        t0 = time.time()
        df = pd.read_parquet(compiled)
        up = read_meta(compiled)
        out = deduplicate(df, radius_arcsec=radius_arcsec, instrument_priority=instrument_priority,
                          star_rank=star_rank)
        per_survey = {}
        kept_survey = out["survey"].to_numpy(object)[
            pd.Index(out["uid"]).get_indexer(out["dedup_kept_uid"])]
        for s in pd.unique(out["survey"]):
            m = (out["survey"] == s).to_numpy()
            st = out.loc[m, "dedup_status"].value_counts()
            dropped = m & (out["dedup_status"] == "dropped").to_numpy()
            per_survey[str(s)] = {"rows": int(m.sum()), **{k: int(st.get(k, 0)) for k in DEDUP_STATUS},
                                  "dropped_for": {str(k): int(v) for k, v in
                                                  pd.Series(kept_survey[dropped]).value_counts().sort_index().items()}}
        grp = out.groupby("dedup_group")
        gsize = grp.size()
        conflicting = grp["dedup_dz"].max() > conflict_dz
        mixed = grp["is_star"].nunique() > 1
        winners = out[out["dedup_status"] != "dropped"]
        rep = {
            "stage": "specz_dedup", "output": str(output),
            "parameters": {"radius_arcsec": radius_arcsec, "instrument_priority": list(instrument_priority),
                           "star_rank": star_rank, "conflict_dz": conflict_dz},
            "rows": len(out), "unique": len(winners),
            "status": {k: int((out["dedup_status"] == k).sum()) for k in DEDUP_STATUS},
            "groups": {"total": int(len(gsize)), "multi": int((gsize > 1).sum()),
                       "by_size": {str(k): int(v) for k, v in gsize.value_counts().sort_index().items()},
                       "by_rule": {str(k): int(v) for k, v in
                                   winners["dedup_rule"].value_counts().sort_index().items()},
                       "z_conflict": int(conflicting.sum()), "star_galaxy_mixed": int(mixed.sum())},
            "surveys": per_survey,
            "seconds": round(time.time() - t0, 3),
        }
        meta = {"stage": "specz_dedup", "parameters": rep["parameters"],
                "inputs": [fingerprint(compiled)], "upstream": [up] if up else []}
        _write_parquet(out, output, meta)
        rep["inputs"] = meta["inputs"]
        _write_json(rep, report)
        logger.info("dedup: %d rows -> %d unique (%s)", len(out), len(winners), rep["status"])
        return rep


# ========================================================================== dask / HATS
# shared with the Object-catalog import (pzpipe.hatsio)
from .hatsio import dask_client, is_hats  # noqa: E402,F401


def _parquet_inputs(inputs) -> list[str]:
    """Parquet files named by paths, directories (recursive) and globs."""
    from .hatsio import expand_paths

    return expand_paths(inputs, "trainset.photometry.path", suffixes=(".parquet", ".pq"))


def import_photometry_hats(inputs, output, *, ra_column: str = "ra", dec_column: str = "dec",
                           catalog_name: str = "photometry", pixel_threshold: int = 1_000_000,
                           highest_order: int = 10, margin_arcsec: float = 5.0, margin_order: int = -1,
                           threads: int = 1, mem_mb: int = 4000, scheduler: str | None = None,
                           tmp_dir=None, log: str | None = None) -> str:
    """Import parquet photometry (a file, a directory searched recursively for
    ``*.parquet``, a glob, or a list of those) into a HATS *collection* at ``output``:
    ``output/<catalog_name>/`` (partitioned so that no pixel holds more than
    ``pixel_threshold`` rows, down to ``highest_order``) plus the default margin cache
    ``output/<catalog_name>_margin/`` holding the rows within ``margin_arcsec`` of
    each partition (must be >= the crossmatch radius; ``margin_order`` >= 0 instead
    takes whole HEALPix pixels of that order, a wider margin that is faster to plan).
    ``lsdb.open_catalog(output)`` loads both. hats-import runs on
    :func:`pzpipe.hatsio.dask_client` (``threads`` workers, ``mem_mb`` in total, or a
    running ``scheduler``). Files lacking the coordinate columns are named before the
    import starts. A failed import removes ``output``."""
    from .hatsio import check_same_columns, import_catalog

    with log_to(log):
        files = _parquet_inputs(inputs)
        check_same_columns(files, [ra_column, dec_column], "trainset.photometry.path")
        return import_catalog(files, output, ra_column=ra_column, dec_column=dec_column,
                              catalog_name=catalog_name, pixel_threshold=pixel_threshold,
                              highest_order=highest_order, margin_arcsec=margin_arcsec,
                              margin_order=margin_order, threads=threads, mem_mb=mem_mb,
                              scheduler=scheduler, tmp_dir=tmp_dir)


# ========================================================================= 4. crossmatch
def resolve_multimatches(matches: pd.DataFrame, id_column: str, *, star_rank: int = 4) -> pd.DataFrame:
    """Keep one spec-z row per photometric object (``id_column``): highest flag rank
    (stars count as ``star_rank``), then smallest ``_dist_arcsec``, then lowest
    ``specz_id`` (same ordering as :func:`deduplicate`), then lowest ``specz_uid``.
    Adds ``n_specz_matches`` (rows that matched the object). Output sorted by
    ``id_column``."""
    if len(matches) == 0:
        out = matches.copy()
        out["n_specz_matches"] = np.zeros(0, np.int32)
        return out
    m = matches.reset_index(drop=True)
    rank = np.where(m["specz_is_star"].to_numpy(bool), star_rank, m["z_flag"].to_numpy(np.int64))
    keys = _id_sort_columns(m["specz_id"])
    work = pd.DataFrame({"_pid": m[id_column].to_numpy(), "_neg_rank": -rank,
                         "_dist": m["_dist_arcsec"].to_numpy(float), "_k0": keys["_k0"],
                         "_k1": keys["_k1"], "_k2": keys["_k2"],
                         "_uid": m["specz_uid"].to_numpy(np.int64)})
    work = work.sort_values(["_pid", "_neg_rank", "_dist", "_k0", "_k1", "_k2", "_uid"], kind="stable")
    counts = work.groupby("_pid", sort=False).size()
    best = work.drop_duplicates("_pid", keep="first")
    out = m.loc[best.index].copy()
    out["n_specz_matches"] = counts.reindex(best["_pid"]).to_numpy(np.int32)
    return out.reset_index(drop=True)


def _phot_coord_columns(cat) -> tuple[str, str]:
    info = cat.hc_structure.catalog_info
    return info.ra_column, info.dec_column


def crossmatch_specz(specz, photometry, output, report, *, id_column: str = "id",
                     radius_arcsec: float = 1.0, min_flag: int = 3, keep_stars: bool = False,
                     star_rank: int = 4, columns: list[str] | None = None, margin_cache=None,
                     threads: int = 1, mem_mb: int = 4000, scheduler: str | None = None,
                     log: str | None = None) -> dict:
    """Crossmatch the deduplicated spec-z table with a HATS photometric catalog.

    Spec-z rows used: ``dedup_status != "dropped"``, ``z_flag >= min_flag``, and no
    stars unless ``keep_stars`` (every exclusion counted per survey in the report).
    They become an LSDB catalog (``lsdb.from_dataframe``) crossmatched with
    ``photometry`` (a HATS catalog or collection; its margin cache, or
    ``margin_cache``, is required and must be at least ``radius_arcsec`` wide) by
    ``crossmatch(phot, n_neighbors=1, radius_arcsec=radius_arcsec,
    require_right_margin=True)``: each spec-z row gets its nearest photometric object
    within the radius. A photometric object matched by several spec-z rows keeps one
    (:func:`resolve_multimatches`).

    ``output`` (parquet, sorted by ``id_column``): the photometric columns (all, or
    ``columns``; a photometric column whose name is one of :data:`SPECZ_COLUMNS`
    gets the suffix ``_phot``), then ``redshift``, ``z_flag``, ``survey``,
    ``specz_id``, ``specz_uid``, ``specz_ra``, ``specz_dec``, ``specz_instrument``,
    ``specz_is_star``, ``_dist_arcsec`` (arcsec), ``n_specz_matches``.
    """
    import lsdb

    with log_to(log):
        t0 = time.time()
        sz = pd.read_parquet(specz)
        up = read_meta(specz)
        reasons = {
            "dedup_dropped": (sz["dedup_status"] == "dropped").to_numpy() if "dedup_status" in sz
            else np.zeros(len(sz), bool),
        }
        reasons["star"] = ~reasons["dedup_dropped"] & sz["is_star"].to_numpy(bool) & (not keep_stars)
        reasons["flag_below_min"] = (~reasons["dedup_dropped"] & ~reasons["star"]
                                     & ~sz["is_star"].to_numpy(bool)
                                     & (sz["z_flag"].to_numpy(int) < min_flag))
        use = ~(reasons["dedup_dropped"] | reasons["star"] | reasons["flag_below_min"])
        left = pd.DataFrame({
            "specz_uid": sz["uid"].to_numpy(np.int64), "specz_id": sz["specz_id"].astype(str),
            "survey": sz["survey"].astype(str), "redshift": sz["redshift"].to_numpy(float),
            "z_flag": sz["z_flag"].to_numpy(np.int8), "specz_instrument": sz["instrument"].astype(str),
            "specz_is_star": sz["is_star"].to_numpy(bool),
            "specz_ra": sz["ra"].to_numpy(float), "specz_dec": sz["dec"].to_numpy(float),
        })[use].reset_index(drop=True)

        if not is_hats(photometry):
            raise PipelineError(f"{photometry} is not a HATS catalog: import it first "
                                "(import_photometry_hats, rule photometry_hats)")
        phot = lsdb.open_catalog(str(photometry), margin_cache=margin_cache)
        if columns:  # always carry id and coordinates
            ra_col, dec_col = _phot_coord_columns(phot)
            columns = list(dict.fromkeys([id_column, ra_col, dec_col, *columns]))
            phot = lsdb.open_catalog(str(photometry), columns=columns, margin_cache=margin_cache)
        if phot.margin is None:
            raise PipelineError(f"{photometry} has no margin cache: generate one (import_photometry_hats "
                             "writes a collection with a margin) or pass margin_cache=")
        margin_thr = phot.margin.hc_structure.catalog_info.margin_threshold
        if margin_thr is not None and margin_thr < radius_arcsec:
            raise PipelineError(f"margin cache of {margin_thr}\" is narrower than the crossmatch "
                             f"radius {radius_arcsec}\"")
        ra_col, dec_col = _phot_coord_columns(phot)
        phot_cols = [c for c in phot.columns if c != "_healpix_29"]
        if id_column not in phot_cols:
            raise PipelineError(f"id column {id_column!r} not in the photometric catalog columns {phot_cols}")
        renamed = {c: f"{c}_phot" for c in phot_cols if c in SPECZ_COLUMNS}

        n_matched_raw = 0
        if len(left):
            with dask_client(threads, mem_mb, scheduler=scheduler) as _client:
                scat = lsdb.from_dataframe(left, ra_column="specz_ra", dec_column="specz_dec",
                                           catalog_name="specz", margin_threshold=None)
                xm = scat.crossmatch(phot, n_neighbors=1, radius_arcsec=radius_arcsec,
                                     require_right_margin=True, suffixes=("", "_phot"),
                                     suffix_method="overlapping_columns", log_changes=False)
                raw = pd.DataFrame(xm.compute(progress_bar=False)).reset_index(drop=True)
            n_matched_raw = len(raw)
        else:
            raw = pd.DataFrame(columns=list(left.columns) + [f"{c}_phot" if c in renamed else c
                                                             for c in phot_cols] + ["_dist_arcsec"])
        raw = raw.drop(columns=[c for c in raw.columns if c == "_healpix_29"], errors="ignore")
        pid = renamed.get(id_column, id_column)
        resolved = resolve_multimatches(raw, pid, star_rank=star_rank)
        out_cols = ([renamed.get(c, c) for c in phot_cols]
                    + ["redshift", "z_flag", "survey", "specz_id", "specz_uid", "specz_ra", "specz_dec",
                       "specz_instrument", "specz_is_star", "_dist_arcsec", "n_specz_matches"])
        resolved = resolved[out_cols].sort_values(pid, kind="stable").reset_index(drop=True)

        per_survey = {}
        matched_uid = raw["specz_uid"].to_numpy(np.int64) if len(raw) else np.zeros(0, np.int64)
        final_uid = resolved["specz_uid"].to_numpy(np.int64)
        for s in pd.unique(sz["survey"]):
            m = (sz["survey"] == s).to_numpy()
            uids = sz.loc[m & use, "uid"].to_numpy(np.int64)
            n_match = int(np.isin(uids, matched_uid).sum())
            n_final = int(np.isin(uids, final_uid).sum())
            per_survey[str(s)] = {"rows": int(m.sum()),
                                  **{f"excluded_{k}": int((v & m).sum()) for k, v in reasons.items()},
                                  "used": int(len(uids)), "matched": n_match,
                                  "unmatched": int(len(uids) - n_match),
                                  "lost_to_multimatch": n_match - n_final, "in_output": n_final}
        rep = {
            "stage": "trainset_crossmatch", "output": str(output),
            "parameters": {"radius_arcsec": radius_arcsec, "n_neighbors": 1, "min_flag": min_flag,
                           "keep_stars": keep_stars, "star_rank": star_rank, "id_column": id_column,
                           "columns": columns, "margin_threshold_arcsec": margin_thr},
            "photometry": {"path": str(photometry), "ra_column": ra_col, "dec_column": dec_col,
                           "partitions": int(phot.npartitions), "renamed_columns": renamed},
            "specz_rows": len(sz), "specz_used": int(use.sum()),
            "excluded": {k: int(v.sum()) for k, v in reasons.items()},
            "matches_raw": n_matched_raw, "objects_matched": len(resolved),
            "objects_multimatched": int((resolved["n_specz_matches"] > 1).sum()),
            "rows_lost_to_multimatch": n_matched_raw - len(resolved),
            "surveys": per_survey, "seconds": None,
        }
        meta = {"stage": "trainset_crossmatch", "parameters": rep["parameters"],
                "phot_id_column": pid, "phot_ra_column": renamed.get(ra_col, ra_col),
                "phot_dec_column": renamed.get(dec_col, dec_col),
                "phot_columns": [renamed.get(c, c) for c in phot_cols],
                "inputs": [fingerprint(specz), fingerprint(photometry)], "upstream": [up] if up else []}
        _write_parquet(resolved, output, meta)
        rep["inputs"] = meta["inputs"]
        rep["seconds"] = round(time.time() - t0, 3)
        _write_json(rep, report)
        logger.info("crossmatch: %d spec-z rows used, %d raw matches, %d photometric objects",
                 rep["specz_used"], n_matched_raw, len(resolved))
        return rep


# ============================================================================== 5. split
def split_indices(z: np.ndarray, *, train_fraction: float = 0.7, seed: int = 42,
                  stratify_zbins=None) -> np.ndarray:
    """Boolean "is train" per row. Rows are shuffled with
    ``numpy.random.default_rng(seed)``; with ``stratify_zbins`` (int: that many
    equal-count bins in ``z``; list: bin edges, values outside go to the end bins) the
    split is done bin by bin (in bin order). A bin of n rows gives
    ``floor(train_fraction * n + 0.5)`` train rows."""
    z = np.asarray(z, float)
    n = len(z)
    if not 0.0 <= train_fraction <= 1.0:
        raise PipelineError(f"train_fraction must be in [0, 1], got {train_fraction}")
    rng = np.random.default_rng(seed)
    if stratify_zbins is None or n == 0:
        bins = np.zeros(n, np.int64)
    else:
        edges = (np.quantile(z, np.linspace(0, 1, int(stratify_zbins) + 1))
                 if np.isscalar(stratify_zbins) else np.asarray(stratify_zbins, float))
        bins = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)
    is_train = np.zeros(n, bool)
    for b in np.unique(bins):
        idx = np.flatnonzero(bins == b)
        k = int(np.floor(train_fraction * len(idx) + 0.5))
        is_train[idx[rng.permutation(len(idx))[:k]]] = True
    return is_train


def _mag_for_plot(df: pd.DataFrame, mag_column: str | None):
    """(values, label) of the magnitude to plot: ``mag_column`` or the first of
    mag_i_lsst, mag_i, i_gaap1p0Flux, i_psfFlux, i_cModelFlux, any mag_*; flux columns
    (name contains 'Flux', nJy) become AB magnitudes -2.5 log10(f) + 31.4."""
    cands = [mag_column] if mag_column else ["mag_i_lsst", "mag_i", "i_gaap1p0Flux", "i_psfFlux",
                                             "i_cModelFlux"] + [c for c in df.columns
                                                                if c.startswith("mag_") and "err" not in c]
    for c in cands:
        if c and c in df.columns:
            v = df[c].to_numpy(float)
            if "flux" in c.lower():
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = np.where(v > 0, -2.5 * np.log10(v) + 31.4, np.nan)
                return v, f"{c} (AB mag)"
            return v, c
    return None, None


def plot_split(train: pd.DataFrame, test: pd.DataFrame, path, *, mag_column=None, title=""):
    """PNG with the redshift and magnitude distributions of train vs test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    z_all = np.concatenate([train["redshift"].to_numpy(float), test["redshift"].to_numpy(float)])
    zb = np.linspace(0, max(np.nanmax(z_all), 1e-3) * 1.02, 40) if len(z_all) else np.linspace(0, 3, 40)
    for df, lab, col in ((train, "train", "C0"), (test, "test", "C1")):
        axes[0].hist(df["redshift"], bins=zb, density=True, histtype="step", lw=1.8, color=col,
                     label=f"{lab} (N={len(df)})")
    axes[0].set_xlabel("spectroscopic redshift")
    axes[0].set_ylabel("density")
    axes[0].legend()
    mtr, mlab = _mag_for_plot(train, mag_column)
    mte, _ = _mag_for_plot(test, mag_column)
    if mtr is not None:
        allm = np.concatenate([mtr, mte])
        allm = allm[np.isfinite(allm) & (allm < 90)]
        mb = np.linspace(np.nanmin(allm), np.nanmax(allm), 40) if len(allm) else 40
        for v, lab, col in ((mtr, "train", "C0"), (mte, "test", "C1")):
            v = v[np.isfinite(v) & (v < 90)]
            axes[1].hist(v, bins=mb, density=True, histtype="step", lw=1.8, color=col, label=lab)
        axes[1].set_xlabel(mlab)
        axes[1].set_ylabel("density")
        axes[1].legend()
    else:
        axes[1].text(0.5, 0.5, "no magnitude column", ha="center", va="center", transform=axes[1].transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def split_trainset(matched, outdir, *, train_fraction: float = 0.7, seed: int = 42,
                   stratify_zbins=None, mag_column: str | None = None, write_hats: bool = True,
                   threads: int = 1, mem_mb: int = 4000, scheduler: str | None = None,
                   log: str | None = None) -> dict:
    """Split the crossmatched table into train and test sets (see :func:`split_indices`).

    Writes into ``outdir``: ``train.parquet``, ``test.parquet`` (same columns as the
    crossmatch output plus nothing else, sorted by the photometric id; byte-identical
    for the same input and parameters), ``train_hats/`` and ``test_hats/`` (HATS
    catalogs, when ``write_hats``), ``summary.json`` (counts per set, survey, flag and
    redshift bin, KS test of the z distributions), ``split.png`` (z and magnitude
    distributions) and ``provenance.json`` (input fingerprints, parameters, package
    versions, the upstream stages' parameters and inputs).
    """
    import lsdb

    with log_to(log):
        t0 = time.time()
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        df = pd.read_parquet(matched)
        up = read_meta(matched)
        pid = up.get("phot_id_column", "id")
        ra_col = up.get("phot_ra_column", "ra")
        dec_col = up.get("phot_dec_column", "dec")
        df = df.sort_values([pid, "specz_uid"], kind="stable").reset_index(drop=True)
        is_train = split_indices(df["redshift"].to_numpy(), train_fraction=train_fraction, seed=seed,
                                 stratify_zbins=stratify_zbins)
        train = df[is_train].reset_index(drop=True)
        test = df[~is_train].reset_index(drop=True)
        params = {"train_fraction": train_fraction, "seed": seed,
                  "stratify_zbins": stratify_zbins, "mag_column": mag_column}
        meta = {"stage": "trainset_split", "parameters": params, "upstream": [up] if up else []}
        _write_parquet(train, outdir / "train.parquet", {**meta, "set": "train"})
        _write_parquet(test, outdir / "test.parquet", {**meta, "set": "test"})
        if write_hats:
            with dask_client(threads, mem_mb, scheduler=scheduler) as _client:
                for name, part in (("train", train), ("test", test)):
                    with _atomic_dir(outdir / f"{name}_hats") as tmp:
                        if len(part):
                            cat = lsdb.from_dataframe(part, ra_column=ra_col, dec_column=dec_col,
                                                      catalog_name=f"trainset_{name}", margin_threshold=None)
                            cat.write_catalog(tmp, progress_bar=False, overwrite=True)
                        else:
                            tmp.mkdir()
        # summary
        from scipy.stats import ks_2samp

        zb = np.asarray(stratify_zbins, float) if (stratify_zbins is not None and not np.isscalar(stratify_zbins)) \
            else np.linspace(0, max(3.0, float(df["redshift"].max()) if len(df) else 3.0), 7)

        def counts(part):
            h, _ = np.histogram(np.clip(part["redshift"], zb[0], zb[-1]), bins=zb)
            return {"rows": len(part),
                    "survey": {str(k): int(v) for k, v in part["survey"].value_counts().sort_index().items()},
                    "z_flag": {str(k): int(v) for k, v in part["z_flag"].value_counts().sort_index().items()},
                    "z_bins": {"edges": [float(x) for x in zb], "counts": [int(x) for x in h]},
                    "z_mean": float(part["redshift"].mean()) if len(part) else None,
                    "z_median": float(part["redshift"].median()) if len(part) else None}

        ks = ks_2samp(train["redshift"], test["redshift"]) if len(train) and len(test) else None
        summary = {"stage": "trainset_split", "rows": len(df), "train": counts(train), "test": counts(test),
                   "train_fraction_actual": len(train) / len(df) if len(df) else None,
                   "ks_redshift": {"statistic": float(ks.statistic), "pvalue": float(ks.pvalue)} if ks else None,
                   "parameters": params,
                   "files": {"train": str(outdir / "train.parquet"), "test": str(outdir / "test.parquet"),
                             "train_hats": str(outdir / "train_hats") if write_hats else None,
                             "test_hats": str(outdir / "test_hats") if write_hats else None,
                             "plot": str(outdir / "split.png")}}
        _write_json(summary, outdir / "summary.json")
        ks_txt = f", KS p(z) = {ks.pvalue:.2g}" if ks else ""
        plot_split(train, test, outdir / "split.png", mag_column=mag_column,
                   title=f"training set split: seed {seed}, train fraction {train_fraction}"
                         f"{', stratified' if stratify_zbins is not None else ''}{ks_txt}")
        prov = {"stage": "trainset_split", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": platform.node(), "argv": sys.argv, "parameters": params,
                "inputs": [fingerprint(matched)],
                "outputs": {n: sha256_file(outdir / f"{n}.parquet") for n in ("train", "test")},
                "upstream": [up] if up else [], "versions": versions(),
                "seconds": round(time.time() - t0, 3)}
        _write_json(prov, outdir / "provenance.json")
        logger.info("split: %d train, %d test", len(train), len(test))
        return summary


# --------------------------------------------------------------------------------------
# Rule entry points (workflow/rules/trainset.smk): settings + Snakemake's input/output.
def run_compile(ts: dict, output) -> dict:
    return compile_specz(ts["specz"]["catalogs"], output.table, output.report,
                         zmax=ts["specz"]["zmax"])


def run_dedup(ts: dict, input, output) -> dict:
    d = ts["dedup"]
    return dedup_specz(input[0], output.table, output.report, radius_arcsec=d["radius_arcsec"],
                       instrument_priority=d["instrument_priority"], star_rank=d["star_rank"],
                       conflict_dz=d["conflict_dz"])


def run_import(ts: dict, input, output, threads: int, mem_mb: int) -> str:
    p = ts["photometry"]
    if not p["path"]:
        raise PipelineError("config error at 'trainset.photometry.path': set the photometric "
                            "catalog (HATS or parquet) to cross-match with")
    return import_photometry_hats(
        list(input), output[0], ra_column=p["ra_column"], dec_column=p["dec_column"],
        catalog_name=p["catalog_name"], pixel_threshold=p["pixel_threshold"],
        highest_order=p["highest_order"], margin_arcsec=p["margin_arcsec"],
        margin_order=p["margin_order"], threads=threads, mem_mb=mem_mb,
        scheduler=ts["dask"]["scheduler"], tmp_dir=ts["dask"]["tmp_dir"])


def run_crossmatch(ts: dict, input, output, threads: int, mem_mb: int) -> dict:
    x, p = ts["crossmatch"], ts["photometry"]
    return crossmatch_specz(input.specz, input.photometry, output.table, output.report,
                            id_column=p["id_column"], radius_arcsec=x["radius_arcsec"],
                            min_flag=x["min_flag"], keep_stars=x["keep_stars"],
                            star_rank=ts["dedup"]["star_rank"], columns=p["columns"],
                            margin_cache=p["margin_cache"], threads=threads, mem_mb=mem_mb,
                            scheduler=ts["dask"]["scheduler"])


def run_split(ts: dict, input, outdir: str, threads: int, mem_mb: int) -> dict:
    s = ts["split"]
    return split_trainset(input[0], outdir, train_fraction=s["train_fraction"], seed=s["seed"],
                          stratify_zbins=s["stratify_zbins"], mag_column=s["mag_column"],
                          write_hats=s["write_hats"], threads=threads, mem_mb=mem_mb,
                          scheduler=ts["dask"]["scheduler"])


def photometry_files(ts: dict) -> list[str]:
    """The parquet files of ``trainset.photometry.path`` (file, directory or glob), for the
    import rule's input (a glob would be a missing literal input to Snakemake)."""
    path = ts["photometry"]["path"]
    paths = path if isinstance(path, list) else [path]
    return _parquet_inputs([resolve_path(p) for p in paths])
