"""Step 2: self-crossmatch of the compiled spec-z rows (friends-of-friends), one row per
group."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .. import PipelineError
from ._common import (DEDUP_STATUS, INSTRUMENTS, _chord, _id_sort_columns, _unit_vectors,
                      _write_json, _write_parquet, fingerprint, log_to, logger, read_meta)


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
