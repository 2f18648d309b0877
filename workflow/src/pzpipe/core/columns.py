"""Column names and row flags shared by every stage, the estimators and the release.

The skinny tables of the partition stage carry the configured id column renamed to
``ID_COL``, AB magnitudes and errors under ``mag_col(band)`` / ``err_col(band)`` (the
names RAIL's LSST configuration expects) and a ``flags`` bitmask.
"""
from __future__ import annotations

# flags bitmask: bit b (0..nbands-1) = band b not detected; bit 16 = error replaced
FLAG_BAD_ERR = 1 << 16
ID_COL = "object_id"


def mag_col(band: str) -> str:
    return f"mag_{band}_lsst"


def err_col(band: str) -> str:
    return f"mag_err_{band}_lsst"
