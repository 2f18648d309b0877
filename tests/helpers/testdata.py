"""Synthetic test catalogs for the training-set maker (pzpipe.trainset).

No public catalog ships spectroscopic redshifts *and* photometry *and* sky
positions, so the tests build their own from the real DC2 photometry that
pz-rail-base ships (``examples_data/testdata/test_dc2_training_9816.hdf5``,
10,225 galaxies, sorted by redshift: shuffled here with a seed).

:func:`make_trainset_testdata` writes

* a photometric catalog (two parquet files, DC2 columns ``id``,
  ``mag_{u..y}_lsst``, ``mag_err_{u..y}_lsst``, plus ``ra``, ``dec`` and the true
  redshift renamed ``z_true``), with galaxies placed at deterministic positions in a
  ~2 x 2 deg box centred on a HEALPix order-3 vertex, so that the catalog spans
  many HEALPix partitions once imported with a small ``pixel_threshold``;
* three spec-z "surveys" in three formats and three flag conventions:

  ======  =======  ==================================  ==========================
  survey  format   flags (raw -> homogenised)          instrument
  ======  =======  ==================================  ==========================
  SURVA   parquet  0..4 -> 0..4, 6 -> star             spectroscopic (fixed)
  SURVB   CSV      A/B/C/D -> 4/3/2/1, S -> star        column ``method`` S/G/P
  SURVC   FITS     0..4 -> 0..4, 9 -> star             spectroscopic (fixed)
  ======  =======  ==================================  ==========================

  with astrometric jitter (< 0.2" per catalog, so that cross-survey duplicates are
  always within the 0.5" deduplication radius), duplicates across surveys and
  within one survey, conflicting redshifts and flags, stars, bad rows (NaN RA,
  Dec 95, z -1, ...), spec-z / photometric pairs placed on both sides of HEALPix
  pixel boundaries, photometric objects matched by two spec-z rows 0.7" apart
  (multi-matches), photometric blends (two objects 0.7" apart) and spec-z rows
  with no photometric counterpart.

It returns the paths, a ready ``trainset`` config section and a ``truth`` dict
(expected rejection counts, edge pairs, multi-match winners) for the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

DC2_FILE = "examples_data/testdata/test_dc2_training_9816.hdf5"
BANDS = "ugrizy"
#: an order-3 HEALPix vertex (four order-3 pixels meet here), inside the DC2 footprint
DEFAULT_CENTER = (67.5, -30.0)

# The expected rejections in each spec-z catalog, by first failing reason.
BAD_ROWS = {
    "SURVA": {"ra_nan": 2, "dec_range": 1, "ra_range": 1, "z_negative": 2, "z_nan": 1,
              "z_above_zmax": 1},
    "SURVB": {"dec_nan": 1, "z_negative": 2, "flag_unmapped": 1, "instrument_unknown": 1},
    "SURVC": {"dec_range": 1, "ra_range": 1, "z_nan": 1, "id_missing": 1},
}


def load_dc2(seed: int = 0, n: int | None = None) -> pd.DataFrame:
    """The DC2 training photometry shipped with pz-rail-base, shuffled with ``seed``."""
    import tables_io
    from rail.utils.path_utils import find_rail_file

    data = tables_io.read(find_rail_file(DC2_FILE))["photometry"]
    df = pd.DataFrame({k: np.asarray(v) for k, v in data.items()})
    cols = ["id"] + [f"mag_{b}_lsst" for b in BANDS] + [f"mag_err_{b}_lsst" for b in BANDS] + ["redshift"]
    df = df[cols]
    order = np.random.default_rng(seed).permutation(len(df))
    df = df.iloc[order].reset_index(drop=True)
    return df if n is None else df.iloc[:n].reset_index(drop=True)


# --------------------------------------------------------------------------- geometry
def _offset(ra, dec, dx_arcsec, dy_arcsec):
    """Move by (dx east, dy north) arcsec in the tangent plane (small offsets)."""
    ra = np.asarray(ra, float)
    dec = np.asarray(dec, float)
    dec2 = dec + np.asarray(dy_arcsec) / 3600.0
    ra2 = ra + np.asarray(dx_arcsec) / 3600.0 / np.cos(np.radians(dec))
    return np.mod(ra2, 360.0), dec2


def angular_sep_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle separation (Vincenty formula, accurate at all scales), arcsec."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(x, float)) for x in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra),
                   np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den)) * 3600.0


def healpix_pixel(ra, dec, order):
    """Nested HEALPix pixel index of each position at ``order``."""
    import astropy.units as u
    import cdshealpix
    from astropy.coordinates import Latitude, Longitude

    ra = np.atleast_1d(np.asarray(ra, float))
    dec = np.atleast_1d(np.asarray(dec, float))
    return cdshealpix.nested.lonlat_to_healpix(Longitude(ra * u.deg), Latitude(dec * u.deg), order)


def _boundary_pair(rng, center, half, order, sep_arcsec):
    """Two positions ``sep_arcsec`` apart on either side of a pixel boundary at ``order``.

    Draws a random point A in the box and a point B 0.3 deg away until A and B are in
    different pixels, then bisects the segment down to 1 mas and steps sep/2 to
    each side along the segment. Returns (ra_a, dec_a, ra_b, dec_b): a in A's pixel.
    """
    ra0, dec0 = center
    while True:
        ra_a = ra0 + rng.uniform(-half, half) / np.cos(np.radians(dec0))
        dec_a = dec0 + rng.uniform(-half, half)
        ang = rng.uniform(0, 2 * np.pi)
        ra_b, dec_b = _offset(ra_a, dec_a, 1080 * np.cos(ang), 1080 * np.sin(ang))
        pa = healpix_pixel(ra_a, dec_a, order)[0]
        if healpix_pixel(ra_b, dec_b, order)[0] != pa:
            break
    lo, hi = 0.0, 1.0  # fraction along A->B; lo in A's pixel, hi not
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        r, d = ra_a + mid * (ra_b - ra_a), dec_a + mid * (dec_b - dec_a)
        if healpix_pixel(r, d, order)[0] == pa:
            lo = mid
        else:
            hi = mid
        if angular_sep_arcsec(ra_a + lo * (ra_b - ra_a), dec_a + lo * (dec_b - dec_a),
                              ra_a + hi * (ra_b - ra_a), dec_a + hi * (dec_b - dec_a)) < 1e-3:
            break
    r, d = ra_a + lo * (ra_b - ra_a), dec_a + lo * (dec_b - dec_a)
    # unit direction A->B in the tangent plane
    dx = (ra_b - ra_a) * np.cos(np.radians(dec_a))
    dy = dec_b - dec_a
    norm = np.hypot(dx, dy)
    dx, dy = dx / norm, dy / norm
    ra1, dec1 = _offset(r, d, -dx * sep_arcsec / 2, -dy * sep_arcsec / 2)
    ra2, dec2 = _offset(r, d, dx * sep_arcsec / 2, dy * sep_arcsec / 2)
    return float(ra1), float(dec1), float(ra2), float(dec2)


def _jitter(rng, ra, dec, max_arcsec=0.2, sigma=0.07):
    n = len(ra)
    r = np.minimum(np.abs(rng.normal(0, sigma, n)), max_arcsec)
    ang = rng.uniform(0, 2 * np.pi, n)
    return _offset(ra, dec, r * np.cos(ang), r * np.sin(ang))


# --------------------------------------------------------------------------- catalogs
def make_photometry(n: int = 3000, *, seed: int = 20261123, center=DEFAULT_CENTER,
                    half_size_deg: float = 1.0, min_sep_arcsec: float = 5.0) -> pd.DataFrame:
    """``n`` shuffled DC2 galaxies at uniform positions in a box, at least
    ``min_sep_arcsec`` apart (so that only the deliberately placed pairs are close)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    df = load_dc2(seed=seed, n=n).rename(columns={"redshift": "z_true"})
    ra0, dec0 = center
    s0, s1 = np.sin(np.radians(dec0 - half_size_deg)), np.sin(np.radians(dec0 + half_size_deg))
    halfra = half_size_deg / np.cos(np.radians(dec0))
    ra = rng.uniform(ra0 - halfra, ra0 + halfra, n)
    dec = np.degrees(np.arcsin(rng.uniform(s0, s1, n)))
    for _ in range(100):  # redraw the members of too-close pairs
        xyz = _unit(ra, dec)
        pairs = cKDTree(xyz).query_pairs(2 * np.sin(np.radians(min_sep_arcsec / 3600) / 2),
                                         output_type="ndarray")
        if len(pairs) == 0:
            break
        redo = np.unique(pairs[:, 1])
        ra[redo] = rng.uniform(ra0 - halfra, ra0 + halfra, len(redo))
        dec[redo] = np.degrees(np.arcsin(rng.uniform(s0, s1, len(redo))))
    df.insert(1, "ra", ra)
    df.insert(2, "dec", dec)
    return df


def _unit(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def make_trainset_testdata(outdir, *, n_phot: int = 3000, seed: int = 20261123,
                           center=DEFAULT_CENTER, half_size_deg: float = 1.0,
                           n_edge: int = 40, pixel_threshold: int = 300) -> dict:
    """Write the photometric parquet files and three spec-z catalogs into ``outdir``.

    Returns ``{"photometry": [paths], "specz": [catalog configs], "config": trainset
    config section, "truth": {...}}``; the ``truth`` keys are

    * ``rows``: rows written per survey; ``rejected``: expected rejections per survey
      and reason (:data:`BAD_ROWS`);
    * ``edge_pairs``: list of ``[survey, specz_id, phot_id]`` placed on both sides of a
      HEALPix boundary, 0.5" apart;
    * ``multi``: list of ``{"phot_id", "winner": [survey, specz_id], "rule"}``,
      photometric objects matched by two spec-z rows 0.7" apart;
    * ``stars``: number of valid star rows; ``blends``: ``[phot_id, neighbour_id]``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    phot = make_photometry(n_phot, seed=seed, center=center, half_size_deg=half_size_deg)
    n = len(phot)
    idx = rng.permutation(n)
    # disjoint roles for the photometric objects
    cursor = 0

    def take(k):
        nonlocal cursor
        out = idx[cursor:cursor + k]
        cursor += k
        return out

    i_edge = take(n_edge)
    i_multi = take(12)
    i_blend = take(10)
    i_star = take(20)
    i_a = take(700)
    i_b_new = take(250)
    i_c_new = take(150)
    ra, dec = phot["ra"].to_numpy().copy(), phot["dec"].to_numpy().copy()
    ztrue = phot["z_true"].to_numpy()
    pid = phot["id"].to_numpy()

    rows = {"SURVA": [], "SURVB": [], "SURVC": []}
    truth = {"edge_pairs": [], "multi": [], "blends": []}

    def add(survey, i_phot, r, d, z, flag, method="S", sid=None):
        rows[survey].append({"ra": r, "dec": d, "z": z, "flag": flag, "method": method,
                             "phot": -1 if i_phot is None else int(pid[i_phot]), "sid": sid})

    # -- edge pairs: photometric object on one side of a pixel boundary, spec-z on the other
    orders = [3, 4, 5, 6, 7]
    for k, i in enumerate(i_edge):
        ra_p, dec_p, ra_s, dec_s = _boundary_pair(rng, center, half_size_deg * 0.95,
                                                  orders[k % len(orders)], 0.5)
        ra[i], dec[i] = ra_p, dec_p
        survey = ["SURVA", "SURVB", "SURVC"][k % 3]
        add(survey, i, ra_s, dec_s, ztrue[i] + 1e-4, {"SURVA": 4, "SURVB": "A", "SURVC": 4}[survey])
        truth["edge_pairs"].append([survey, len(rows[survey]) - 1, int(pid[i])])

    # -- surveys proper
    for i in i_a:
        f = rng.choice([4, 3, 2, 1, 0], p=[0.5, 0.25, 0.1, 0.1, 0.05])
        add("SURVA", i, ra[i], dec[i], ztrue[i] + rng.normal(0, 3e-4) * (1 + ztrue[i]), int(f))
    # B: 250 objects shared with A (30 with a conflicting redshift), 250 of its own
    shared_ab = i_a[:250]
    for j, i in enumerate(np.concatenate([shared_ab, i_b_new])):
        f = rng.choice(["A", "B", "C", "D"], p=[0.45, 0.3, 0.15, 0.1])
        z = ztrue[i] + rng.normal(0, 1e-3) * (1 + ztrue[i])
        if j < 30:
            z = float(rng.uniform(0.05, 2.5))  # conflicting redshift
        add("SURVB", i, ra[i], dec[i], z, str(f), method=str(rng.choice(["S", "G", "P"], p=[0.5, 0.3, 0.2])))
    # C: 100 shared with A (50 also in B), 150 of its own, 40 observed twice
    shared_c = np.concatenate([i_a[200:300]])
    for i in np.concatenate([shared_c, i_c_new, i_c_new[:40]]):
        f = rng.choice([4, 3, 2, 1], p=[0.6, 0.2, 0.1, 0.1])
        add("SURVC", i, ra[i], dec[i], ztrue[i] + rng.normal(0, 3e-4) * (1 + ztrue[i]), int(f))
    # stars (at the position of photometric objects): 12 in A, 8 in B
    for k, i in enumerate(i_star):
        if k < 12:
            add("SURVA", i, ra[i], dec[i], 0.0, 6)
        else:
            add("SURVB", i, ra[i], dec[i], 0.0, "S", method="S")
    # photometric blends: a second photometric object 0.7" from the first; the
    # spec-z row sits 0.15" from the first one (its nearest neighbour)
    extra = []
    for i in i_blend:
        r2, d2 = _offset(ra[i], dec[i], 0.7, 0.0)
        new = phot.iloc[[i]].copy()
        new["id"] = int(pid[i]) + 10_000_000_000
        new["ra"], new["dec"] = float(r2), float(d2)
        extra.append(new)
        r, d = _offset(ra[i], dec[i], -0.15, 0.0)
        add("SURVA", i, float(r), float(d), ztrue[i], 4)
        truth["blends"].append([int(pid[i]), int(new["id"].iloc[0])])
    # multi-matches: two spec-z rows 0.7" apart, one each side of the photometric
    # object (never deduplicated, both match it). 6 decided by flag, 6 by distance.
    for k, i in enumerate(i_multi):
        ang = rng.uniform(0, 2 * np.pi)
        if k < 6:   # flag: SURVA flag 4 at 0.4" beats SURVB flag B(3) at 0.3"
            d1, d2 = 0.4, 0.3
            add("SURVA", i, *_offset(ra[i], dec[i], d1 * np.cos(ang), d1 * np.sin(ang)), ztrue[i], 4)
            add("SURVB", i, *_offset(ra[i], dec[i], -d2 * np.cos(ang), -d2 * np.sin(ang)), ztrue[i], "B")
            truth["multi"].append({"phot_id": int(pid[i]), "winner": ["SURVA", len(rows["SURVA"]) - 1],
                                   "rule": "flag"})
        else:       # distance: same flag 4, SURVC at 0.25" beats SURVA at 0.45"
            d1, d2 = 0.45, 0.25
            add("SURVA", i, *_offset(ra[i], dec[i], d1 * np.cos(ang), d1 * np.sin(ang)), ztrue[i], 4)
            add("SURVC", i, *_offset(ra[i], dec[i], -d2 * np.cos(ang), -d2 * np.sin(ang)), ztrue[i], 4)
            truth["multi"].append({"phot_id": int(pid[i]), "winner": ["SURVC", len(rows["SURVC"]) - 1],
                                   "rule": "distance"})
    # unmatched spec-z rows: 10 far from everything (3" from a photometric object is
    # enough as objects are >= 5" apart), in SURVB
    for i in i_c_new[40:50]:
        add("SURVB", None, *_offset(ra[i], dec[i], 3.0, 0.0), 0.5, "A")

    # bad rows (appended last, on positions of "new" objects, never matter for matching)
    def bad(survey, reason):
        r, d, z = float(ra[i_c_new[60]]), float(dec[i_c_new[60]]), 0.3
        flag = {"SURVA": 4, "SURVB": "A", "SURVC": 4}[survey]
        method, sid = "S", None
        if reason == "ra_nan":
            r = np.nan
        elif reason == "dec_nan":
            d = np.nan
        elif reason == "ra_range":
            r = 400.0 if survey == "SURVA" else -10.0
        elif reason == "dec_range":
            d = 95.0 if survey == "SURVA" else -95.0
        elif reason == "z_negative":
            z = -1.0
        elif reason == "z_nan":
            z = np.nan
        elif reason == "z_above_zmax":
            z = 5.0
        elif reason == "flag_unmapped":
            flag = "Q"
        elif reason == "instrument_unknown":
            method = "X"
        elif reason == "id_missing":
            sid = "missing"
        rows[survey].append({"ra": r, "dec": d, "z": z, "flag": flag, "method": method, "phot": -1,
                             "sid": sid, "bad": True})

    for survey, reasons in BAD_ROWS.items():
        for reason, k in reasons.items():
            for _ in range(k):
                bad(survey, reason)

    # photometry files
    phot.loc[:, "ra"], phot.loc[:, "dec"] = ra, dec
    phot = pd.concat([phot] + extra, ignore_index=True)
    phot = phot.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pdir = outdir / "photometry"
    pdir.mkdir(exist_ok=True)
    half = len(phot) // 2
    phot_paths = [str(pdir / "part0.parquet"), str(pdir / "part1.parquet")]
    phot.iloc[:half].to_parquet(phot_paths[0], index=False)
    phot.iloc[half:].to_parquet(phot_paths[1], index=False)

    # spec-z files (row order = insertion order; ids as below)
    rng2 = np.random.default_rng(seed + 2)
    js = {}
    for survey in rows:
        js[survey] = pd.DataFrame(rows[survey])
        ra_j, dec_j = _jitter(rng2, js[survey]["ra"].to_numpy(), js[survey]["dec"].to_numpy())
        good = (js[survey]["bad"] != True).to_numpy()  # noqa: E712 (NaN for good rows)
        edge_rows = [p[1] for p in truth["edge_pairs"] if p[0] == survey]
        multi_rows = [m["winner"][1] for m in truth["multi"] if m["winner"][0] == survey]
        fixed = np.zeros(len(js[survey]), bool)
        fixed[edge_rows] = True  # edge and multi-match positions are exact
        fixed[multi_rows] = True
        fixed[[k for k, r in enumerate(rows[survey]) if r["phot"] in {m["phot_id"] for m in truth["multi"]}]] = True
        js[survey].loc[good & ~fixed, "ra"] = ra_j[good & ~fixed]
        js[survey].loc[good & ~fixed, "dec"] = dec_j[good & ~fixed]

    a = js["SURVA"]
    df_a = pd.DataFrame({"ID": np.arange(1, len(a) + 1, dtype=np.int64), "RA": a["ra"], "DEC": a["dec"],
                         "Z": a["z"], "ZFLAG": a["flag"].astype(np.int64)})
    b = js["SURVB"]
    df_b = pd.DataFrame({"objname": [f"B{k:05d}" for k in range(len(b))], "ra_deg": b["ra"],
                         "dec_deg": b["dec"], "zspec": b["z"], "qual": b["flag"], "method": b["method"]})
    c = js["SURVC"]
    cid = np.arange(1, len(c) + 1, dtype=np.float64)  # FITS: float id with one NaN (missing)
    cid[c["sid"].to_numpy() == "missing"] = np.nan
    df_c = pd.DataFrame({"id": cid, "ra": c["ra"], "dec": c["dec"], "z": c["z"],
                         "zconf": c["flag"].astype(np.int16)})
    # SURVC: stars flagged 9 (none by construction, but keep the convention in the map)

    paths = {"SURVA": str(outdir / "surva.parquet"), "SURVB": str(outdir / "survb.csv"),
             "SURVC": str(outdir / "survc.fits")}
    df_a.to_parquet(paths["SURVA"], index=False)
    df_b.to_csv(paths["SURVB"], index=False)
    from astropy.table import Table
    Table.from_pandas(df_c).write(paths["SURVC"], overwrite=True)

    ids = {"SURVA": df_a["ID"].astype(str).to_numpy(), "SURVB": df_b["objname"].to_numpy(),
           "SURVC": np.array([str(int(x)) if np.isfinite(x) else "" for x in cid])}
    truth["edge_pairs"] = [[s, str(ids[s][r]), p] for s, r, p in truth["edge_pairs"]]
    for m in truth["multi"]:
        m["winner"] = [m["winner"][0], str(ids[m["winner"][0]][m["winner"][1]])]
    truth["rows"] = {s: len(js[s]) for s in js}
    truth["rejected"] = BAD_ROWS
    truth["stars"] = len(i_star)
    truth["phot_rows"] = len(phot)
    # phot id each spec-z row was built from (-1: none / bad row), per survey, by id
    truth["source_phot"] = {s: dict(zip(ids[s].tolist(), js[s]["phot"].astype(int).tolist(), strict=True)) for s in js}

    specz = [
        {"survey": "SURVA", "path": paths["SURVA"],
         "columns": {"id": "ID", "ra": "RA", "dec": "DEC", "z": "Z", "flag": "ZFLAG"},
         "flag_map": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 6: "star"}, "instrument": "spectroscopic"},
        {"survey": "SURVB", "path": paths["SURVB"],
         "columns": {"id": "objname", "ra": "ra_deg", "dec": "dec_deg", "z": "zspec", "flag": "qual"},
         "flag_map": {"A": 4, "B": 3, "C": 2, "D": 1, "S": "star"},
         "instrument_column": "method",
         "instrument_map": {"S": "spectroscopic", "G": "grism", "P": "photometric"}},
        {"survey": "SURVC", "path": paths["SURVC"],
         "columns": {"id": "id", "ra": "ra", "dec": "dec", "z": "z", "flag": "zconf"},
         "flag_map": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 9: "star"}, "instrument": "spectroscopic"},
    ]
    config = {
        "specz": {"zmax": 3.0, "catalogs": specz},
        "dedup": {"radius_arcsec": 0.5},
        "photometry": {"path": str(pdir), "id_column": "id", "ra_column": "ra", "dec_column": "dec",
                       "pixel_threshold": pixel_threshold, "margin_arcsec": 5.0},
        "crossmatch": {"radius_arcsec": 1.0, "min_flag": 3},
        "split": {"train_fraction": 0.7, "seed": 42},
    }
    with open(outdir / "truth.json", "w") as fh:
        json.dump(truth, fh, indent=1)
    return {"photometry": phot_paths, "specz": specz, "config": config, "truth": truth}
