"""Synthetic Rubin-like HATS Object catalogs from the DC2 sample shipped in pz-rail-base.

Used by ``make run`` (the default data: the DC2 validation sample, exactly, as a small
HATS Object catalog) and by the release rehearsal (benchmarks/rehearsal.py: N objects
resampled from it). **Synthetic**: the catalog's properties and README say so.

Columns (Rubin DP1 Object names): ``objectId`` (int64), ``coord_ra``, ``coord_dec``
(deg), ``{band}_gaap1p0Flux`` and ``{band}_gaap1p0FluxErr`` (nJy, float64) for ugrizy,
``detect_isPrimary`` (bool), ``_healpix_29`` (the HATS spatial index), and
``truth_redshift`` (the cosmoDC2 redshift; not a Rubin column, kept for validation).

* Fluxes: ``f = 10**(-0.4 (m - 31.4))`` nJy and ``df = f dm ln(10)/2.5`` from the DC2
  magnitudes (the inverse of the pipeline's flux -> magnitude step); a DC2 non-detection
  (magnitude 99, error column = 1-sigma limiting magnitude) becomes flux NaN with
  ``df`` = the flux of the limiting magnitude.
* ``exact=True``: every DC2 object once, fluxes as above. Otherwise N objects drawn with
  replacement, each flux re-drawn as ``f + N(0, df)`` (a fresh noise realisation; a
  draw <= 0 is a non-detection for the pipeline).
* Positions: the catalog is ``n_pixels`` consecutive (nested, Z-order) HEALPix pixels of
  ``order`` near (ra, dec) = (62, -37) (the DC2 area); a pixel's objects are uniform in
  its area (uniform order-29 cells inside it). Rows of a pixel are sorted by
  ``_healpix_29``, as HATS requires.
* ``detect_isPrimary`` is False for a deterministic ``non_primary`` fraction (default
  1%), so that the catalog cut is exercised (those rows are cut and counted).
* Deterministic from ``seed``; one pixel in memory at a time (1e7 objects: ~0.5 GB peak
  with 500k-row pixels).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe.core import hatsio
from pzpipe.core.io import atomic_dir

log = logging.getLogger(__name__)

BANDS = "ugrizy"
ZP = 31.4
DC2_FILE = "examples_data/testdata/test_dc2_validation_9816.hdf5"
CENTRE = (62.0, -37.0)


def load_dc2(path: str | None = None) -> dict[str, np.ndarray]:
    """DC2 magnitudes (pz-rail-base test file) as fluxes; arrays of one row per object."""
    import tables_io
    from rail.utils.path_utils import find_rail_file

    d = tables_io.read(path or find_rail_file(DC2_FILE))["photometry"]
    out = {"id": np.asarray(d["id"], dtype=np.int64),
           "redshift": np.asarray(d["redshift"], dtype=np.float64)}
    for b in BANDS:
        m = np.asarray(d[f"mag_{b}_lsst"], dtype=np.float64)
        e = np.asarray(d[f"mag_err_{b}_lsst"], dtype=np.float64)
        det = m != 99.0
        f = np.where(det, 10 ** (-0.4 * (m - ZP)), np.nan)
        fe = np.where(det, f * e * np.log(10) / 2.5, 10 ** (-0.4 * (e - ZP)))
        out[f"{b}_flux"], out[f"{b}_fluxerr"] = f, fe
    return out


def schema() -> pa.Schema:
    fields = [pa.field("objectId", pa.int64()), pa.field("coord_ra", pa.float64()),
              pa.field("coord_dec", pa.float64())]
    for b in BANDS:
        fields += [pa.field(f"{b}_gaap1p0Flux", pa.float64()),
                   pa.field(f"{b}_gaap1p0FluxErr", pa.float64())]
    fields += [pa.field("detect_isPrimary", pa.bool_()), pa.field("truth_redshift", pa.float64()),
               pa.field(hatsio.HEALPIX_COL, pa.int64())]
    return pa.schema(fields)


def _pixels(order: int, n_pixels: int) -> list[int]:
    """``n_pixels`` consecutive nested pixels of ``order`` starting at an aligned block
    around CENTRE (compact on the sky)."""
    from hats.pixel_math.healpix_shim import radec2pix

    base = int(radec2pix(order, np.array([CENTRE[0]]), np.array([CENTRE[1]]))[0])
    block = 4 ** math.ceil(math.log(max(n_pixels, 1), 4))
    start = (base // block) * block
    npix = 12 * 4 ** order
    if start + n_pixels > npix:
        start = npix - n_pixels
    return list(range(start, start + n_pixels))


def _positions(rng, order: int, pix: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    import cdshealpix.nested as chn

    span = 4 ** (hatsio.HEALPIX_ORDER - order)
    cells = pix * span + rng.integers(0, span, n, dtype=np.int64)
    lon, lat = chn.healpix_to_lonlat(cells.astype(np.uint64), hatsio.HEALPIX_ORDER)
    return np.asarray(lon.deg, dtype=np.float64), np.asarray(lat.deg, dtype=np.float64)


def write_catalog(out, n: int | None = None, *, seed: int = 0, exact: bool = False,
                  rows_per_pixel: int = 500_000, order: int | None = None,
                  non_primary: float = 0.01, name: str | None = None,
                  source: str | None = None) -> dict:
    """Write a synthetic HATS Object catalog at ``out`` (see the module docstring).

    ``exact``: the DC2 sample itself (``n`` ignored). ``order``: HEALPix order of the
    pixels (default: the lowest order whose pixels are < 2 deg across at this size, at
    least 6)."""
    t0 = time.time()
    src = load_dc2(source)
    n_src = len(src["id"])
    n = n_src if exact else int(n)
    n_pixels = max(1, math.ceil(n / rows_per_pixel))
    if order is None:
        order = max(6, math.ceil(math.log(max(n_pixels, 1), 4)) + 5)
    pixels = _pixels(order, n_pixels)
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "dataset").mkdir()
        sch = schema()
        perm = np.random.default_rng(seed).permutation(n_src) if exact else None
        next_id = 1
        done = 0
        for i, pix in enumerate(pixels):
            m = min(rows_per_pixel, n - done) if not exact else (
                n // n_pixels + (1 if i < n % n_pixels else 0))
            rng = np.random.default_rng([seed, order, pix])
            idx = perm[done:done + m] if exact else rng.integers(0, n_src, m)
            ra, dec = _positions(rng, order, pix, m)
            cols = {"objectId": np.arange(next_id, next_id + m, dtype=np.int64),
                    "coord_ra": ra, "coord_dec": dec}
            for b in BANDS:
                f, fe = src[f"{b}_flux"][idx], src[f"{b}_fluxerr"][idx]
                if not exact:
                    f = f + rng.normal(0.0, 1.0, m) * fe      # NaN (non-detection) stays NaN
                cols[f"{b}_gaap1p0Flux"], cols[f"{b}_gaap1p0FluxErr"] = f, fe
            cols["detect_isPrimary"] = rng.random(m) >= non_primary
            cols["truth_redshift"] = src["redshift"][idx]
            cols[hatsio.HEALPIX_COL] = hatsio.spatial_index(ra, dec)
            order_idx = np.argsort(cols[hatsio.HEALPIX_COL], kind="stable")
            table = pa.table({k: np.asarray(v)[order_idx] for k, v in cols.items()}, schema=sch)
            path = Path(hatsio.pixel_file(tmp, order, pix))
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, compression="zstd")
            next_id += m
            done += m
            del table, cols
        from hats.catalog import PartitionInfo, TableProperties
        from hats.io import write_parquet_metadata
        from hats.pixel_math.healpix_pixel import HealpixPixel

        PartitionInfo.from_healpix([HealpixPixel(order, p) for p in pixels]).write_to_file(
            tmp / "partition_info.csv")
        write_parquet_metadata(tmp, create_metadata=n_pixels <= 1000, create_per_partition_stats=True)
        kind = "the DC2 validation sample, exactly" if exact else f"{n} objects resampled"
        TableProperties(catalog_name=name or out.name, catalog_type="object", total_rows=n,
                        ra_column="coord_ra", dec_column="coord_dec",
                        healpix_column=hatsio.HEALPIX_COL, healpix_order=hatsio.HEALPIX_ORDER,
                        hats_order=order,
                        obs_description=f"SYNTHETIC Rubin-like Object catalog made by "
                                        f"pzpipe.planning.synth from {kind} (cosmoDC2 magnitudes from "
                                        f"pz-rail-base's {Path(DC2_FILE).name}), seed {seed}; "
                                        f"not Rubin data",
                        hats_builder="pzpipe.planning.synth").to_properties_file(tmp)
        info = {"objects": n, "pixels": n_pixels, "order": order, "seed": seed, "exact": exact,
                "rows_per_pixel": rows_per_pixel, "non_primary": non_primary}
        # no timing in the files: the same arguments give the same bytes
        (tmp / "SYNTHETIC.md").write_text(
            "# Synthetic catalog\n\nThis HATS catalog is synthetic (pzpipe.planning.synth), not Rubin "
            f"data: {kind} from cosmoDC2 (pz-rail-base test file), Rubin DP1 column names.\n\n"
            f"```\n{json.dumps(info, indent=2)}\n```\n")
    info["seconds"] = round(time.time() - t0, 1)
    log.info("synthetic catalog %s: %s", out, info)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pzpipe.planning.synth", description=__doc__.split("\n")[0])
    ap.add_argument("out", help="catalog directory to write (replaced if it exists)")
    ap.add_argument("-n", "--objects", type=float, default=None,
                    help="objects to draw (default: the DC2 validation sample, exactly)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows-per-pixel", type=float, default=500_000)
    ap.add_argument("--order", type=int, default=None)
    ap.add_argument("--non-primary", type=float, default=0.01)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = write_catalog(a.out, None if a.objects is None else int(a.objects), seed=a.seed,
                         exact=a.objects is None, rows_per_pixel=int(a.rows_per_pixel),
                         order=a.order, non_primary=a.non_primary)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
