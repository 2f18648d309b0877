"""Gaussian PDFs (RAIL's ``qp.stats.norm`` ensembles), shared by the estimators that give
one Gaussian per object.

The pipeline evaluates every PDF on its grid; for a Gaussian it also keeps the exact
parameters (``loc``, ``scale``) as extra columns, from which the PDF on any grid can be
recomputed exactly (``norm_pdf_grid``).
"""

from __future__ import annotations

import numpy as np

_NORM_PDF_C = np.sqrt(2 * np.pi)     # scipy.stats._continuous_distns._norm_pdf_C


def norm_pdf_grid(loc: np.ndarray, scale: np.ndarray, zgrid: np.ndarray) -> np.ndarray:
    """(N, nz) Gaussian densities on ``zgrid``: ``qp.Ensemble(qp.stats.norm, loc, scale)
    .pdf(zgrid)`` bit for bit (scipy's ``rv_continuous.pdf`` arithmetic in its order:
    ``x = (z - loc) / scale``, ``exp(-x**2/2.0) / sqrt(2 pi) / scale``; NaN where
    ``scale <= 0`` or ``x`` is NaN, 0 where ``x`` is infinite), without scipy's overhead."""
    loc = np.asarray(loc, dtype=np.float64).reshape(-1, 1)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = (np.asarray(zgrid, dtype=np.float64) - loc) / scale
        good = scale > 0
        out = np.exp(-x ** 2 / 2.0) / _NORM_PDF_C / scale
    out[np.isinf(x) & good] = 0.0
    out[~good[:, 0]] = np.nan
    out[np.isnan(x)] = np.nan
    return out


def norm_ancillaries(ens) -> dict:
    """The Gaussian parameters of a ``qp.stats.norm`` ensemble: {'loc', 'scale'} (N,)."""
    od = ens.objdata
    return {"loc": np.asarray(od["loc"], dtype=np.float64).reshape(-1),
            "scale": np.asarray(od["scale"], dtype=np.float64).reshape(-1)}


EXTRAS = {"loc": "pdf_loc", "scale": "pdf_scale"}
# float32, like the point estimates (relative rounding <= 6e-8 of RAIL's float64 values).
# Not float64: RAIL's float64 values change in the last bit with the process's history
# (CMNN's scale, 2 of 30 objects, 5.6e-17, when BPZ ran before in the same process), so
# float64 columns could not be recomputed bit for bit by the audit; rounded to float32
# they are (docs/estimators.md).
EXTRA_DTYPES: dict = {}


def extra_meta(name: str) -> dict:
    return {
        "pdf_loc": {"description": f"{name}: mean (loc) of the Gaussian PDF the estimator "
                                   "returns (qp norm), before truncation to the z grid",
                    "unit": ""},
        "pdf_scale": {"description": f"{name}: standard deviation (scale) of the Gaussian "
                                     "PDF the estimator returns (qp norm)", "unit": ""},
    }
