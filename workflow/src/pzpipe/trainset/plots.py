"""The training-set split plot (redshift and magnitude distributions)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pzpipe.core.io import atomic_path


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
