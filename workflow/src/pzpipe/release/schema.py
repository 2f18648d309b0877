"""The release table: its columns, their descriptions and units, flag bits, metadata.

One row per released object; one group of columns per estimator, named like Rubin's own
DP1 photo-z catalog (``{algo}_z_median``, ``{algo}_z_err68_low``, ...), so that users'
analysis code reads our release unchanged. The same schema (field metadata included) is
in every release file and in ``dataset/_common_metadata``.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from pzpipe import algorithms
from pzpipe.release import pdfstore
from pzpipe.core.hatsio import HEALPIX_COL
from pzpipe.core.columns import FLAG_BAD_ERR
from pzpipe.release.pointest import FLAG_PDF_BAD, KEYS as POINT_COLS
from pzpipe.core.zgrid import spec as zgrid_spec

POINT_DOCS = {
    "z_mode": "photo-z: mode of the PDF (grid node of its maximum)",
    "z_mean": "photo-z: mean of the PDF",
    "z_median": "photo-z: median of the PDF",
    "z_err68_low": "15.865525393145707th percentile of the PDF (lower end of the central "
                   "68.27% interval, -1 sigma of a Gaussian; an absolute redshift, not an offset)",
    "z_err68_high": "84.13447460685429th percentile of the PDF (upper end of the central "
                    "68.27% interval, +1 sigma of a Gaussian)",
    "z_err95_low": "2.5th percentile of the PDF (lower end of the central 95% interval)",
    "z_err95_high": "97.5th percentile of the PDF (upper end of the central 95% interval)",
}


def flag_bits(cfg: dict) -> list[dict]:
    """The bits of ``{algo}_flags``."""
    bits = [{"bit": i, "meaning": f"not detected in band {b} (magnitude set to "
                                  f"{cfg['partition']['nondetect_val']}, error to the "
                                  f"1-sigma limit)"} for i, b in enumerate(cfg["bands"])]
    bits.append({"bit": int(np.log2(FLAG_BAD_ERR)),
                 "meaning": "a detection without a usable error, treated as a non-detection"})
    bits.append({"bit": int(np.log2(FLAG_PDF_BAD)),
                 "meaning": "the estimator returned an empty or invalid PDF: point estimates "
                            "NaN, PDF null"})
    return bits


def _field(name, typ, description, unit="", **extra):
    md = {"description": description, "unit": unit, **{k: str(v) for k, v in extra.items()}}
    return pa.field(name, typ, metadata={k.encode(): v.encode() for k, v in md.items()})


def extra_type(algo, col: str) -> pa.DataType:
    """Arrow type of an estimator's extra column: ``Algorithm.extra_dtypes`` (e.g. float64
    Gaussian parameters, int32 counts), float32 otherwise."""
    return pa.from_numpy_dtype(np.dtype(algo.extra_dtypes.get(col, "float32")))


def pdf_column(algo: str) -> str:
    return f"{algo}_pdf"


def release_schema(cfg: dict, algos: list[str], *, id_column: str, ra_column: str | None,
                   dec_column: str | None, hats: bool, extra_metadata: dict | None = None) -> pa.Schema:
    """Arrow schema of the release (column order: id, coordinates, spatial index, then
    each estimator's points, extras, flags and PDF)."""
    zg = zgrid_spec(cfg)
    fields = [_field(id_column, pa.int64(), "object identifier (the input catalog's id)")]
    if ra_column:
        fields.append(_field(ra_column, pa.float64(), "right ascension (from the input "
                                                       "catalog)", "deg"))
        fields.append(_field(dec_column, pa.float64(), "declination (from the input catalog)",
                             "deg"))
    if hats:
        fields.append(_field(HEALPIX_COL, pa.int64(), "HATS spatial index: nested HEALPix "
                                                     "pixel of the position at order 29"))
    pdf_columns = {}
    for a in algos:
        algo = algorithms.get(a)
        for c in POINT_COLS:
            fields.append(_field(f"{a}_{c}", pa.float32(), f"{a}: {POINT_DOCS[c]}"))
        for col in algo.extras.values():
            em = (getattr(algo, "extra_meta", None) or {}).get(col) or {}
            doc = em.get("description") or f"{a}: estimator output '{col}'"
            fields.append(_field(f"{a}_{col}", extra_type(algo, col), doc, em.get("unit", "")))
        fields.append(_field(f"{a}_flags", pa.int32(), f"{a}: flag bits (see the release "
                                                       f"README: non-detections, invalid PDF)"))
        fields.append(_field(pdf_column(a), pa.binary(),
                             f"{a}: PDF p(z) on the z grid, quantised CDF "
                             f"({pdfstore.ENCODING}, docs/pdf_format.md); null if invalid; "
                             f"decode with pzpipe.release.read.to_ensemble",
                             "", pdf_encoding=pdfstore.ENCODING, zgrid=json.dumps(zg)))
        pdf_columns[pdf_column(a)] = {"algorithm": a, "encoding": pdfstore.ENCODING, "zgrid": zg}
    meta = {"release": cfg["release"], "algorithms": list(algos), "zgrid": zg,
            "pdf_encoding": pdfstore.ENCODING, "pdf_columns": pdf_columns,
            "id_column": id_column, "ra_column": ra_column, "dec_column": dec_column,
            "flag_bits": flag_bits(cfg), **(extra_metadata or {})}
    return pa.schema(fields, metadata={b"pzpipe": json.dumps(meta, sort_keys=True).encode()})


def column_dictionary(schema: pa.Schema) -> list[dict]:
    """[{name, type, unit, description}] of a release schema (for the README)."""
    out = []
    for f in schema:
        md = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        out.append({"name": f.name, "type": str(f.type), "unit": md.get("unit", ""),
                    "description": md.get("description", "")})
    return out
