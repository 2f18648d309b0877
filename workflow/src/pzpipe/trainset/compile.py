"""Step 1: read spec-z catalogs, homogenise flags and instruments, reject bad rows
(counted by reason)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import PipelineError
from pzpipe.run.config import resolve_path
from ._common import (INSTRUMENTS, REJECT_REASONS, STAR_FLAG, _write_json, _write_parquet,
                      fingerprint, log_to, logger)


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
