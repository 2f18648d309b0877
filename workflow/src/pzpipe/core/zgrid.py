"""The redshift grid: built from the config, checked, stored in and read from metadata.

Every module that needs the pipeline's z grid (estimates, validation, audit, release
schema, the PDF store and the standalone reader pzpipe.release.read) takes it from here. The
grid is linear, ``numpy.linspace(zmin, zmax, nz)`` from the config's ``zgrid`` section,
recorded in metadata as ``[zmin, zmax, nz]``. Only numpy is imported (the reader's
environment has no RAIL or numba).
"""
from __future__ import annotations

import json

import numpy as np

#: the default grid of pzpipe.release.pdfstore's functions (the schema's default too: 0..3, 301)
DEFAULT = np.linspace(0.0, 3.0, 301)


def from_config(cfg: dict) -> np.ndarray:
    """The pipeline's grid: ``linspace(zmin, zmax, nz)`` of ``cfg["zgrid"]``."""
    g = cfg["zgrid"]
    return np.linspace(g["zmin"], g["zmax"], g["nz"])


def spec(cfg: dict) -> list:
    """``[zmin, zmax, nz]`` of ``cfg["zgrid"]`` (how metadata records the grid)."""
    g = cfg["zgrid"]
    return [float(g["zmin"]), float(g["zmax"]), int(g["nz"])]


def check(zgrid, default=None) -> np.ndarray:
    """``zgrid`` (``default`` when None) as a contiguous float64 vector; at least 2
    finite, strictly increasing nodes, else ValueError."""
    if zgrid is None:
        zgrid = default
    z = np.ascontiguousarray(np.asarray(zgrid, dtype=np.float64).ravel())
    if z.size < 2:
        raise ValueError("zgrid needs at least 2 points")
    if not np.all(np.isfinite(z)) or not np.all(np.diff(z) > 0):
        raise ValueError("zgrid must be finite and strictly increasing")
    return z


def node_weights(zgrid) -> np.ndarray:
    """Trapezoid weights of the grid nodes: ``sum(p * w) == trapezoid(p, zgrid)``."""
    z = check(zgrid)
    dz = np.diff(z)
    w = np.zeros(z.size)
    w[:-1] += dz / 2
    w[1:] += dz / 2
    return w


def to_metadata(zgrid) -> list:
    """``[zmin, zmax, nz]`` for the ``pzpipe`` metadata JSON (linear grids only)."""
    z = check(zgrid)
    if not np.allclose(z, np.linspace(z[0], z[-1], z.size), rtol=0,
                       atol=1e-12 * max(1.0, abs(z[-1]))):
        raise ValueError("zgrid is not linear; store it explicitly")
    return [float(z[0]), float(z[-1]), int(z.size)]


def from_metadata(zg) -> np.ndarray | None:
    """The grid a metadata value describes: ``[zmin, zmax, nz]`` with an integer ``nz``
    (as written; also its JSON, or ``{zmin, zmax, nz}``), or any other list: the nodes.
    None for None."""
    if zg is None:
        return None
    if isinstance(zg, bytes):
        zg = zg.decode()
    if isinstance(zg, str):
        zg = json.loads(zg)
    if isinstance(zg, dict):
        zg = [zg["zmin"], zg["zmax"], zg["nz"]]
    zg = list(zg)
    nz = zg[2] if len(zg) == 3 else None
    if isinstance(nz, (int, np.integer)) and not isinstance(nz, bool) and nz >= 2:
        return np.linspace(float(zg[0]), float(zg[1]), int(nz))
    return check(zg)
