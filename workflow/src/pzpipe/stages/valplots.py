"""Validation figures (PNG). Each estimator keeps one colour in every figure; error bars
are bootstrap standard deviations; bins with fewer than validate.bins.small_n objects
are drawn with open markers."""

from __future__ import annotations

import numpy as np

from pzpipe.core.io import atomic_path

PANELS = [("n", "objects per bin"), ("bias", "bias = median(ez)"),
          ("sigma_iqr", "sigma_IQR"), ("sigma_nmad", "sigma_NMAD"),
          ("outlier_rate_3sigma", "outlier rate (qp, 3 sigma)"),
          ("outlier_frac_015", "outlier fraction |ez| > 0.15"), ("coverage_68", "coverage of the 68% interval"),
          ("pit_ks", "PIT KS statistic")]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(algos) -> dict:
    return {a: f"C{i % 10}" for i, a in enumerate(algos)}


def _grid(n, ncol=3):
    ncol = min(n, ncol)
    return int(np.ceil(n / ncol)), ncol


def _save(fig, path):
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _off(axes, used):
    for ax in list(axes.flat)[used:]:
        ax.axis("off")


def scatter(results: dict, path: str, point: str = "z_mode") -> None:
    """z_phot against z_true per estimator (2D histogram, log colour scale)."""
    from matplotlib.colors import LogNorm

    plt = _plt()
    nrow, ncol = _grid(len(results))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 4 * nrow), squeeze=False)
    for ax, (algo, r) in zip(axes.flat, results.items()):
        zt, zp, m = r["zt"], r["zp"], r["metrics"]
        zmax = max(3.0, float(np.nanmax(zt)) if len(zt) else 3.0)
        if len(zt):
            ax.hist2d(zt, zp, bins=120, range=[[0, zmax], [0, zmax]], cmin=1, norm=LogNorm(),
                      cmap="viridis")
        x = np.linspace(0, zmax, 10)
        ax.plot(x, x, "r-", lw=0.8)
        ax.plot(x, x + 0.15 * (1 + x), "r--", lw=0.6)
        ax.plot(x, x - 0.15 * (1 + x), "r--", lw=0.6)
        ax.text(0.03, 0.97, f"n = {m['n']}\nbias = {m['bias']:.4f}\n"
                f"sigma_IQR = {m['sigma_iqr']:.4f}\n3-sigma outliers = "
                f"{m['outlier_rate_3sigma']:.3f}\n|ez| > 0.15: {m['outlier_frac_015']:.3f}",
                transform=ax.transAxes, va="top", fontsize=7.5,
                bbox=dict(facecolor="white", alpha=0.8, lw=0))
        ax.set(xlabel="true z", ylabel=f"photo-z ({point})", title=algo, xlim=(0, zmax), ylim=(0, zmax))
    _off(axes, len(results))
    fig.tight_layout()
    _save(fig, path)


def pit(results: dict, path: str) -> None:
    """PIT histogram (top) and PIT QQ plot (bottom) per estimator."""
    plt = _plt()
    nrow, ncol = _grid(len(results))
    fig, axes = plt.subplots(nrow * 2, ncol, figsize=(4.2 * ncol, 3.2 * 2 * nrow), squeeze=False)
    for i, (algo, r) in enumerate(results.items()):
        pits = r["pits"]
        row, c = divmod(i, ncol)
        ax = axes[2 * row, c]
        ax.hist(pits, bins=50, range=(0, 1), density=True, color="C0", alpha=0.8)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(title=f"{algo}: PIT (KS {r['metrics']['pit_ks']:.3f})", xlabel="PIT",
               ylabel="density", xlim=(0, 1))
        ax = axes[2 * row + 1, c]
        q = np.linspace(0, 1, 101)
        if len(pits):
            ax.plot(q, np.quantile(pits, q), "C0-")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(title=f"{algo}: PIT QQ", xlabel="uniform quantile", ylabel="PIT quantile",
               xlim=(0, 1), ylim=(0, 1))
    used = {(2 * (i // ncol) + k, i % ncol) for i in range(len(results)) for k in (0, 1)}
    for rr in range(axes.shape[0]):
        for cc in range(axes.shape[1]):
            if (rr, cc) not in used:
                axes[rr, cc].axis("off")
    fig.tight_layout()
    _save(fig, path)


def nz(results: dict, zgrid: np.ndarray, path: str) -> None:
    """Whole-sample n(z): true-z histogram and stacked PDFs per estimator."""
    plt = _plt()
    nrow, ncol = _grid(len(results))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (algo, r) in zip(axes.flat, results.items()):
        ax.hist(r["zt"], bins=60, range=(zgrid[0], zgrid[-1]), density=True, histtype="step",
                color="k", label="true z")
        ax.plot(zgrid, r["stacked"], "C1-", label="stacked PDFs")
        ax.set(title=f"{algo}: n(z)", xlabel="z", ylabel="n(z) (unit area)")
        ax.legend(fontsize=8)
    _off(axes, len(results))
    fig.tight_layout()
    _save(fig, path)


SET_STYLES = ("--", ":", "-.")


def _set_lines(ax, key: str, sets: list[dict]) -> None:
    """The requirement sets' limits on ``key`` as grey lines, one style per set; sets with
    the same limit share the line and its label."""
    by_value: dict[float, list[str]] = {}
    styles: dict[float, str] = {}
    for k, rs in enumerate(sets):
        limit = {"bias": rs.get("abs_bias_max"), "sigma_iqr": rs.get("sigma_iqr_max"),
                 "outlier_rate_3sigma": rs.get("outlier_rate_3sigma_max")}.get(key)
        if limit is None:
            continue
        by_value.setdefault(float(limit), []).append(rs["title"])
        styles.setdefault(float(limit), SET_STYLES[k % len(SET_STYLES)])
    for val, titles in by_value.items():
        for v in ((val, -val) if key == "bias" else (val,)):
            ax.axhline(v, color="0.35", lw=0.9, ls=styles[val])
        ax.text(1.0, val, " " + ", ".join(titles), transform=ax.get_yaxis_transform(),
                fontsize=6.5, color="0.3", va="bottom", ha="right")


def _errorbars(ax, x, y, err, small, colour, label, xerr=None):
    """Points with error bars; small bins (``small``) as open markers."""
    big = ~small
    ax.errorbar(x[big], y[big], yerr=err[big], fmt="o", ms=3.5, color=colour, lw=1.0,
                capsize=2, label=label)
    if small.any():
        ax.errorbar(x[small], y[small], yerr=err[small], fmt="o", ms=4, mfc="none",
                    color=colour, lw=0.8, capsize=2)
    ok = np.isfinite(y)
    ax.plot(x[ok], y[ok], "-", color=colour, lw=0.8, alpha=0.6)


def metrics_vs(binned, bin_var: str, xlabel: str, sets: list[dict], path: str,
               min_objects: int = 1, small_n: int = 1, n_boot: int = 0) -> None:
    """Every binned metric against ``bin_var`` (one curve per estimator, bootstrap error
    bars), with the requirement sets' limits as grey lines."""
    plt = _plt()
    part = binned[binned["bin_var"] == bin_var]
    algos = list(dict.fromkeys(part["algorithm"]))
    col = _colours(algos)
    fig, axes = plt.subplots(3, 3, figsize=(15.5, 11), squeeze=False)
    first = part[part["algorithm"] == algos[0]]
    edges = np.append(first["lo"].to_numpy(), first["hi"].to_numpy()[-1])
    counts = {a: part[part["algorithm"] == a]["n"].to_numpy() for a in algos}
    same_n = all(np.array_equal(counts[a], counts[algos[0]]) for a in algos)
    for ax, (key, label) in zip(axes.flat, PANELS):
        if key == "n":
            for a in algos[:1] if same_n else algos:
                ax.stairs(counts[a], edges, color="k" if same_n else col[a],
                          label="all estimators" if same_n else a)
            ax.axhline(min_objects, color="0.4", ls=":", lw=0.9,
                       label=f"min_objects ({min_objects})")
            ax.axhline(small_n, color="0.4", ls="--", lw=0.9, label=f"small_n ({small_n})")
            ax.set_ylim(bottom=0.7)
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        for a in algos if key != "n" else []:
            p = part[part["algorithm"] == a]
            x = 0.5 * (p["lo"].to_numpy() + p["hi"].to_numpy())
            _errorbars(ax, x, p[key].to_numpy(dtype=float), p[f"{key}_err"].to_numpy(dtype=float),
                       p["small"].to_numpy(dtype=bool), col[a], a)
        _set_lines(ax, key, sets)
        if key == "bias":
            ax.axhline(0, color="k", lw=0.6)
        if key == "coverage_68":
            ax.axhline(0.68, color="0.35", lw=0.9, ls="--")
        ax.set(xlabel=xlabel, ylabel=label, title=label, xlim=(edges[0], edges[-1]))
        ax.grid(alpha=0.3)
    ax = axes.flat[-1]
    handles, labels = axes.flat[1].get_legend_handles_labels()
    ax.axis("off")
    ax.legend(handles, labels, loc="center", title="estimator", fontsize=11)
    fig.suptitle(f"Validation metrics against {xlabel} (error bars: bootstrap, N = {n_boot}; "
                 f"open markers: fewer than {small_n} objects; bins under {min_objects} omitted)")
    fig.tight_layout()
    _save(fig, path)


def comparison(results: dict, binned, bin_var: str, xlabel: str, sets: list[dict], path: str,
               small_n: int = 1, n_boot: int = 0, point: str = "z_mode") -> None:
    """All estimators in one figure: ez distributions, PIT histograms, coverage of the
    68%/95% intervals and sigma_IQR, 3-sigma outlier rate and bias against ``bin_var``
    (bootstrap error bars)."""
    plt = _plt()
    algos = list(results)
    col = _colours(algos)
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5), squeeze=False)
    ax = axes[0, 0]
    bins = np.linspace(-0.3, 0.3, 121)
    for a in algos:
        e = (results[a]["zp"] - results[a]["zt"]) / (1 + results[a]["zt"])
        ax.hist(np.clip(e, bins[0], bins[-1]), bins=bins, histtype="step", color=col[a],
                label=a, density=True)
    ax.set_yscale("log")
    for v in (-0.15, 0.15):
        ax.axvline(v, color="0.4", ls="--", lw=0.8)
    ax.set(xlabel=f"ez = ({point} - z_true)/(1 + z_true) (clipped to +-0.3)",
           ylabel="density", title="ez distributions (dashed: |ez| = 0.15)")
    ax.legend(fontsize=8, ncol=2)
    ax = axes[0, 1]
    pb = np.linspace(0, 1, 41)
    for a in algos:
        ax.hist(results[a]["pits"], bins=pb, histtype="step", color=col[a], density=True,
                label=f"{a} (KS {results[a]['metrics']['pit_ks']:.3f})")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="PIT", ylabel="density", title="PIT histograms (flat = calibrated)",
           xlim=(0, 1))
    ax.legend(fontsize=7.5, ncol=2)
    ax = axes[0, 2]
    x = np.arange(len(algos))
    for k, (key, nominal, off) in enumerate((("coverage_68", 0.68, -0.15),
                                            ("coverage_95", 0.95, 0.15))):
        marker = "o" if k == 0 else "s"
        for i, a in enumerate(algos):
            ax.errorbar(x[i] + off, results[a]["metrics"][key],
                        yerr=results[a]["metrics"][f"{key}_err"], fmt=marker, ms=6,
                        capsize=3, color=col[a])
        ax.plot([], [], marker, color="0.3", label=f"{key[-2:]}% interval")
        ax.axhline(nominal, color="0.4", ls="--" if k == 0 else ":", lw=0.9)
    ax.set_xticks(x, algos, rotation=30)
    ax.set(ylabel="fraction with z_true inside", title="coverage of the PDF intervals "
           "(lines: nominal 0.68, 0.95)", ylim=(min(0.4, ax.get_ylim()[0]), 1.0))
    ax.legend(fontsize=8, loc="lower right")
    part = binned[binned["bin_var"] == bin_var]
    for ax, (key, label) in zip(axes[1], (("sigma_iqr", "sigma_IQR"),
                                          ("outlier_rate_3sigma", "3-sigma outlier rate (qp)"),
                                          ("bias", "bias = median(ez)"))):
        for a in algos:
            p = part[part["algorithm"] == a]
            xm = 0.5 * (p["lo"].to_numpy() + p["hi"].to_numpy())
            _errorbars(ax, xm, p[key].to_numpy(dtype=float), p[f"{key}_err"].to_numpy(dtype=float),
                       p["small"].to_numpy(dtype=bool), col[a], a)
        _set_lines(ax, key, sets)
        if key == "bias":
            ax.axhline(0, color="k", lw=0.6)
        ax.set(xlabel=xlabel, ylabel=label, title=f"{label} against {xlabel}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"All estimators (error bars: bootstrap, N = {n_boot}; open markers: bins "
                 f"with fewer than {small_n} objects; grey lines: requirement sets)")
    fig.tight_layout()
    _save(fig, path)


def tomo_nz(algo: str, r: dict, zgrid: np.ndarray, edges, path: str,
            n_boot: int = 0) -> None:
    """One estimator: per photo-z bin, the true-z histogram against the stacked PDFs,
    with both means marked."""
    plt = _plt()
    rows, curves = r["tomo_rows"], r["tomo_curves"]
    idx = np.searchsorted(edges, r["zp"], side="right") - 1
    idx = np.where(r["zp"] == edges[-1], len(edges) - 2, idx)
    nrow, ncol = _grid(len(rows))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.3 * nrow), squeeze=False)
    for i, (ax, row, curve) in enumerate(zip(axes.flat, rows, curves)):
        zt = r["zt"][idx == i]
        if row["n"]:
            ax.hist(zt, bins=np.linspace(zgrid[0], zgrid[-1], 61), density=True,
                    histtype="step", color="k", label="true z")
            ax.plot(zgrid, curve, color="C1", label="stacked PDFs")
            ax.axvline(row["mean_z_true"], color="k", ls="--", lw=0.8)
            ax.axvline(row["mean_z_stacked"], color="C1", ls="--", lw=0.8)
            ax.text(0.97, 0.95, f"n = {row['n']}{' (small)' if row.get('small') else ''}"
                    f"\nmean true z = {row['mean_z_true']:.3f}\n"
                    f"shift = {row['mean_shift']:+.4f} ± {row['mean_shift_err']:.4f}\n"
                    f"shift/(1+z) = {row['mean_shift_1pz']:+.4f} ± "
                    f"{row['mean_shift_1pz_err']:.4f}", transform=ax.transAxes, ha="right",
                    va="top", fontsize=7.5, bbox=dict(facecolor="white", alpha=0.8, lw=0))
        else:
            ax.text(0.5, 0.5, "no objects", transform=ax.transAxes, ha="center")
        ax.axvspan(row["lo"], row["hi"], color="C0", alpha=0.08, lw=0)
        ax.set(title=f"{row['lo']:g} <= photo-z < {row['hi']:g}", xlabel="z",
               ylabel="n(z) (unit area)", xlim=(zgrid[0], zgrid[-1]))
        if i == 0:
            ax.legend(fontsize=7.5, loc="center right")
    _off(axes, len(rows))
    fig.suptitle(f"{algo}: tomographic n(z) (shaded: the photo-z bin; dashed: means; "
                 f"errors: bootstrap, N = {n_boot})")
    fig.tight_layout()
    _save(fig, path)
