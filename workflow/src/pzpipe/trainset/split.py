"""Step 5: seeded train/test split (optionally stratified in z), parquet + HATS,
summary, plot, provenance."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import PipelineError
from pzpipe.core.hatsio import dask_client
from pzpipe.core.io import atomic_dir
from pzpipe.run.provenance import sha256_file
from ._common import (_write_json, _write_parquet, fingerprint, log_to, logger, read_meta,
                      versions)
from .plots import plot_split


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
                    with atomic_dir(outdir / f"{name}_hats", create=False) as tmp:
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
