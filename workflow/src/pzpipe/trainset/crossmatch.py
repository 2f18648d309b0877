"""Step 4: LSDB crossmatch of the spec-z rows against the photometry; one spec-z row
per photometric object."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .. import PipelineError
from pzpipe.core.hatsio import dask_client, is_hats
from ._common import (SPECZ_COLUMNS, _id_sort_columns, _write_json, _write_parquet,
                      fingerprint, log_to, logger, read_meta)


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
