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


def int_ids(ids, where: str, column: str, row0: int | None = None):
    """The id column ``column`` as int64, or a PipelineError (one line naming ``where``,
    the user's file and rows, and the column).

    Integers are taken as they are (uint64 only within the int64 range). Floating-point ids
    are refused unless every value is finite, integral and within ``2**53`` (float64;
    ``2**24`` for float32): beyond that a float no longer holds every integer, so the ids
    the user wrote were already rounded and distinct objects could share one. Anything
    else (strings, booleans, nulls) is refused. ``row0``: the file row of ``ids[0]`` (the
    message then names the row of the first bad value)."""
    import numpy as np

    from pzpipe import PipelineError

    ids = np.asarray(ids)
    kind = ids.dtype.kind
    if kind == "f":
        if not np.all(np.isfinite(ids)):
            raise PipelineError(
                f"{where}: id column '{column}' must hold integers (found dtype {ids.dtype}, "
                f"with NaN). Set columns.id to the object id column.")
        exact = 2 ** (np.finfo(ids.dtype).nmant + 1)
        bad = (ids != np.round(ids)) | (np.abs(ids) > exact)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            v = float(ids[i])
            shown = str(int(v)) if v == round(v) else repr(v)
            at = f" in row {row0 + i}" if row0 is not None else ""
            raise PipelineError(
                f"{where}: id column '{column}' holds floating-point ids ({ids.dtype}) of "
                f"which {int(bad.sum())} are not exact integers (a fraction, or beyond "
                f"+-2**{int(np.log2(exact))}, where a {ids.dtype} no longer holds every "
                f"integer: e.g. {shown}{at}); the ids were rounded and may collide. Write "
                f"the ids as integers (int64) or set columns.id to the integer id column.")
        return ids.astype(np.int64)
    if kind not in "iu":
        raise PipelineError(
            f"{where}: id column '{column}' must hold integers (found dtype {ids.dtype}). "
            f"Set columns.id to the object id column.")
    if kind == "u" and len(ids) and ids.max() > np.iinfo(np.int64).max:
        raise PipelineError(
            f"{where}: id column '{column}' has values above the int64 range (max "
            f"{int(ids.max())}); object ids are stored as int64.")
    return ids.astype(np.int64)
