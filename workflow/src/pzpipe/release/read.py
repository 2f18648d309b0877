"""Read the PDFs of a pzpipe photo-z release without the pipeline's environment.

Install the reader alone (numpy, pyarrow, qp, and lsdb for the READMEs' snippets; no RAIL
or Snakemake; this module imports only numpy, pyarrow and qp, and numba lazily if present)::

    pip install "./[read]"            # in a clone of the pzpipe repository

and turn release rows (from lsdb, pyarrow, pandas, one row group, a filter on
``objectId``, ...) into PDFs::

    from pzpipe.release.read import to_ensemble, pdf_grid
    ens = to_ensemble(table, "fzboost")      # qp.Ensemble (qp.interp on the release's z grid)
    z, pdf = pdf_grid(table, "fzboost")      # numpy: z (nz,), pdf (n_rows, nz)

Only the rows given are decoded (a dense float64 row costs nz * 8 bytes: 2.4 kB at
301 points); iterate over row groups or lsdb partitions for large selections.

Column: ``{algo}_pdf`` (the release), or ``pdf`` (the pipeline's internal
per-algorithm estimate files; used when ``algo`` is None, or when ``{algo}_pdf`` is
absent and the file's ``pzpipe`` metadata names no other algorithm).

z grid and encoding, first found wins: the ``zgrid=`` argument; the Arrow field
metadata of the column (``zgrid``, ``pdf_encoding``); the schema's ``pzpipe`` JSON
(``pdf_columns[col]``, then its top-level ``zgrid``/``pdf_encoding``); a pandas
``DataFrame.attrs["pzpipe"]``; ``release=`` (the release directory, a parquet file
of it, a ``pyarrow.Schema``, or an lsdb/hats catalog object). pandas and lsdb frames
usually lose the Arrow metadata: pass ``release=``. When no metadata names the
encoding, it is taken to be ``pzpipe-qcdf-d2/1`` (the only one pzpipe has written);
an encoding this reader does not know is refused.

The format is specified in docs/pdf_format.md. ``decode_numpy`` is the pure-numpy
reference decoder; ``decode`` uses pzpipe.release.pdfstore's numba decoder when numba is
importable (bit-identical output, tested on every estimator's PDFs) and numpy
otherwise.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from pzpipe.core import zgrid as _zgrid
from pzpipe.core.io import parquet_meta

__all__ = [
    "ENCODING",
    "SUPPORTED_ENCODINGS",
    "to_ensemble",
    "pdf_grid",
    "decode",
    "decode_numpy",
    "node_weights",
    "pdf_info",
]

#: The PDF encoding this reader decodes (docs/pdf_format.md).
ENCODING = "pzpipe-qcdf-d2/1"
SUPPORTED_ENCODINGS = (ENCODING,)

_MAX_VARINT_BYTES = 5       # values < 2**35: enough for bits <= 30 (|zigzag(d2)| <= 2**32)
_BLOCK_ROWS = 1 << 15       # rows decoded per numpy block (bounds temporary memory)
_ID_COLUMNS = ("objectId", "object_id")


# --------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------

_grid = _zgrid.check
node_weights = _zgrid.node_weights


def _binary_array(arr) -> pa.Array:
    """An Arrow binary/large_binary array from Arrow, pandas or a list of bytes."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not isinstance(arr, pa.Array):
        values = arr
        if hasattr(values, "array"):            # pandas Series: its ExtensionArray / ndarray
            values = values.array
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            arr = pa.array(list(values), type=pa.binary(), from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_null(arr.type):          # all None
            arr = arr.cast(pa.binary())
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        return arr
    is_view = getattr(pa.types, "is_binary_view", lambda t: False)    # pyarrow >= 16
    if is_view(arr.type) or pa.types.is_fixed_size_binary(arr.type):
        return arr.cast(pa.large_binary())
    raise TypeError(f"expected a binary PDF column, got {arr.type}")


def _buffers(a: pa.Array):
    """(data uint8, starts int64, stops int64, valid bool) of a binary array."""
    n = len(a)
    bufs = a.buffers()
    off_dtype = np.int64 if pa.types.is_large_binary(a.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_dtype, count=a.offset + n + 1)[a.offset:]
    offsets = offsets.astype(np.int64)
    data = (np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None
            else np.zeros(0, np.uint8))
    valid = np.asarray(a.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return data, offsets[:-1], offsets[1:], valid


def _excl_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.size, np.int64)
    np.cumsum(x[:-1], out=out[1:])
    return out


def _concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices start[i] .. start[i] + lengths[i] - 1, concatenated (no Python loop)."""
    total = int(lengths.sum())
    return np.repeat(starts - _excl_cumsum(lengths), lengths) + np.arange(total, dtype=np.int64)


def _segmented_cumsum_(x: np.ndarray, seg_start: np.ndarray) -> np.ndarray:
    """In place: cumulative sum of ``x`` restarting at every segment (segments contiguous,
    in order, none empty): subtract each segment's total at the start of the next, then
    one cumsum (int64 wrap-around cancels exactly)."""
    if seg_start.size > 1:
        x[seg_start[1:]] -= np.add.reduceat(x, seg_start)[:-1]
    return np.cumsum(x, out=x)


def _varints(vb: np.ndarray):
    """LEB128 varints of ``vb`` (the last byte terminates one): (values int64, starts,
    too_long bool per varint)."""
    term = vb < 0x80
    vstart_mask = np.empty(vb.size, bool)
    vstart_mask[0] = True
    vstart_mask[1:] = term[:-1]
    vstarts = np.flatnonzero(vstart_mask)
    vid = np.cumsum(vstart_mask) - 1                 # varint index of every byte
    pos = np.arange(vb.size, dtype=np.int64) - vstarts[vid]
    too_long = np.zeros(vstarts.size, bool)
    too_long[vid[pos >= _MAX_VARINT_BYTES]] = True
    pos = np.minimum(pos, _MAX_VARINT_BYTES - 1)     # (values of too-long varints are unused)
    values = np.add.reduceat((vb & 0x7F).astype(np.int64) << (7 * pos), vstarts)
    return values, term, too_long


def _decode_block_numpy(data, starts, stops, w, out) -> int:
    """Decode non-null values (``data[starts[i]:stops[i]]``) into ``out`` (n, nz).

    Returns -1, or the index of the first corrupt value: the same values the numba
    decoder rejects (shorter than 2 bytes, bits outside 1..30, a varint longer than 5
    bytes or running past the value's end, no second difference, an increment < 0,
    more nodes than the grid, increments not summing to 2**bits).
    """
    lengths = stops - starts
    bad = lengths < 2
    r = np.flatnonzero(~bad)
    bits = data[starts[r]].astype(np.int64)
    last = data[stops[r] - 1]
    bad[r[(bits < 1) | (bits > 30) | (last >= 0x80)]] = True
    rows = np.flatnonzero(~bad)
    if rows.size:
        bits = data[starts[rows]].astype(np.int64)
        vl = lengths[rows] - 1                       # varint bytes per value (>= 1)
        vb = data[_concat_ranges(starts[rows] + 1, vl)]
        values, term, too_long = _varints(vb)
        row_end = _excl_cumsum(vl) + vl - 1
        counts = np.diff(np.concatenate(([0], np.cumsum(term)[row_end])))
        vrow = np.repeat(np.arange(rows.size), counts)
        long_row = np.zeros(rows.size, bool)
        long_row[vrow[too_long]] = True
        row_bad = long_row | (counts < 2)
        bad[rows[row_bad]] = True
        good = ~row_bad
        _finish(values[good[vrow]], counts[good], rows[good], bits[good], w, out, bad)
    return int(np.flatnonzero(bad)[0]) if bad.any() else -1


def _finish(values, counts, rows, bits, w, out, bad) -> None:
    """values: per good row, ``first`` then the zigzagged second differences."""
    n, nz = out.shape
    vstart = _excl_cumsum(counts)
    first = values[vstart]
    m = counts - 1                                   # second differences per row (>= 1)
    zz = np.delete(values, vstart)
    d2 = (zz >> 1) ^ -(zz & 1)                       # zigzag -> signed
    ds = _excl_cumsum(m)
    inc = _segmented_cumsum_(_segmented_cumsum_(d2, ds), ds)   # increments n_j
    M = np.left_shift(1, bits)
    row_bad = ((np.minimum.reduceat(inc, ds) < 0) | (first + m > nz)
               | (np.add.reduceat(inc, ds) != M))
    bad[rows[row_bad]] = True
    if bad.any():
        return
    whole = rows.size == n                           # all rows of the block (usual case)
    if whole:
        out[...] = 0.0
    else:
        out[rows] = 0.0
    flat = np.repeat(rows * nz + first - ds, m) + np.arange(inc.size, dtype=np.int64)
    if np.all(bits == bits[0]):
        out.reshape(-1)[flat] = inc / float(M[0])
    else:
        out.reshape(-1)[flat] = inc / np.repeat(M, m).astype(np.float64)
    # (n_j / M) / w_j: the division by w over whole rows (0 / w_j = 0) gives the same bits
    if whole:
        out /= w
    else:
        out[rows] /= w


def decode_numpy(arr, zgrid) -> np.ndarray:
    """Pure-numpy reference decoder of ``pzpipe-qcdf-d2/1`` (docs/pdf_format.md).

    ``arr``: an Arrow binary array (or ChunkedArray, pandas Series, list of bytes).
    Returns float64 PDFs (n, nz) on ``zgrid``; null values are rows of NaN. Raises
    ValueError naming the first corrupt value. Output equals the numba decoder's
    (pzpipe.release.pdfstore.decode) bit for bit.
    """
    z = _grid(zgrid)
    a = _binary_array(arr)
    n = len(a)
    out = np.empty((n, z.size))
    if n == 0:
        return out
    data, starts, stops, valid = _buffers(a)
    out[~valid] = np.nan
    w = node_weights(z)
    for lo in range(0, n, _BLOCK_ROWS):
        hi = min(n, lo + _BLOCK_ROWS)
        v = np.flatnonzero(valid[lo:hi])
        if v.size == 0:
            continue
        if v.size == hi - lo:                        # no nulls: decode in place
            bad = _decode_block_numpy(data, starts[lo:hi], stops[lo:hi], w, out[lo:hi])
        else:
            tmp = np.empty((v.size, z.size))
            bad = _decode_block_numpy(data, starts[lo:hi][v], stops[lo:hi][v], w, tmp)
            out[lo + v] = tmp
        if bad >= 0:
            raise ValueError(f"pdf value {lo + int(v[bad])} is corrupt or does not fit a "
                             f"grid of {z.size} points")
    return out


_FAST = None


def _fast_decoder():
    """pzpipe.release.pdfstore.decode if numba imports, else None (cached)."""
    global _FAST
    if _FAST is None:
        try:
            from pzpipe.release import pdfstore  # imports numba
        except ImportError:
            _FAST = False
        else:
            _FAST = pdfstore.decode
    return _FAST or None


def decode(arr, zgrid, *, engine: str = "auto") -> np.ndarray:
    """Decode PDFs to (n, nz) float64; ``engine``: "auto" (numba if importable),
    "numba" or "numpy". Both give the same bits."""
    if engine not in ("auto", "numba", "numpy"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'numpy', not {engine!r}")
    if engine != "numpy":
        fast = _fast_decoder()
        if fast is not None:
            return fast(_binary_array(arr), _grid(zgrid))
        if engine == "numba":
            raise ImportError("engine='numba' needs numba (pip install numba)")
    return decode_numpy(arr, zgrid)


# --------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------

def _kv(meta, key: str):
    if not meta:
        return None
    return meta.get(key.encode(), meta.get(key))


def _info_from_pzpipe(pz: dict, col: str) -> dict:
    """{zgrid, encoding, id_column, algorithm} for ``col`` from a pzpipe JSON dict."""
    out: dict[str, Any] = {}
    per = (pz.get("pdf_columns") or {}).get(col) or {}
    out["zgrid"] = per.get("zgrid", pz.get("zgrid"))
    out["encoding"] = per.get("encoding", per.get("pdf_encoding", pz.get("pdf_encoding")))
    out["id_column"] = pz.get("id_column")
    out["algorithm"] = per.get("algorithm", pz.get("algorithm"))
    return out


def _schema_of_release(release) -> pa.Schema:
    """Schema (with metadata) of a release given as a path, a schema or a catalog."""
    if isinstance(release, pa.Schema):
        return release
    hc = getattr(release, "hc_structure", release)     # lsdb Catalog -> hats Catalog
    if not isinstance(release, (str, os.PathLike)):
        # hats keeps the on-disk schema, metadata included, as original_schema
        # (.schema has the metadata stripped); else read it from the catalog's path
        for attr in ("original_schema", "schema"):
            sch = getattr(hc, attr, None)
            if isinstance(sch, pa.Schema) and (sch.metadata or attr == "schema"
                                               and getattr(hc, "catalog_path", None) is None):
                return sch
        if getattr(hc, "catalog_path", None) is not None:
            release = str(hc.catalog_path)
        else:
            raise TypeError(f"release= takes a path, a pyarrow.Schema or an lsdb/hats "
                            f"catalog, not {type(release).__name__}")
    import pyarrow.parquet as pq

    path = os.fspath(release)
    coll = os.path.join(path, "collection.properties")
    if os.path.isfile(coll):                  # a HATS collection: its primary catalog
        with open(coll) as f:
            props = dict(line.strip().split("=", 1) for line in f
                         if "=" in line and not line.lstrip().startswith("#"))
        if props.get("hats_primary_table_url"):
            path = os.path.join(path, props["hats_primary_table_url"].strip())
    if os.path.isdir(path):
        for cand in (os.path.join(path, "dataset", "_common_metadata"),
                     os.path.join(path, "_common_metadata"),
                     os.path.join(path, "dataset", "_metadata"),
                     os.path.join(path, "_metadata")):
            if os.path.exists(cand):
                return pq.read_schema(cand)
        for root in (os.path.join(path, "dataset"), path):
            if os.path.isdir(root):
                for dirpath, dirnames, files in os.walk(root):
                    dirnames.sort()
                    pqs = sorted(f for f in files if f.endswith(".parquet"))
                    if pqs:
                        return _file_schema(os.path.join(dirpath, pqs[0]))
        raise FileNotFoundError(f"release '{path}': no dataset/_common_metadata and no parquet "
                                f"file found; pass the release directory (the one holding "
                                f"dataset/) or one of its parquet files")
    if not os.path.exists(path):
        raise FileNotFoundError(f"release '{path}' does not exist")
    return _file_schema(path)


def _file_schema(path: str) -> pa.Schema:
    """A parquet file's schema with the footer's key-value metadata merged in (the
    pipeline's estimate writer adds its 'pzpipe' JSON to the footer when it closes)."""
    import pyarrow.parquet as pq

    sch = pq.read_schema(path)
    footer = pq.ParquetFile(path).metadata.metadata or {}
    meta = dict(sch.metadata or {})
    for k, v in footer.items():
        if k != b"ARROW:schema":
            meta.setdefault(k, v)
    return sch.with_metadata(meta)


def _sources(table, col: str, release) -> list[tuple[str, dict]]:
    """Metadata sources in priority order: (name, {zgrid, encoding, id_column, algorithm})."""
    out = []
    schema = table.schema if isinstance(table, (pa.Table, pa.RecordBatch)) else None
    if schema is not None:
        if col in schema.names:
            fm = schema.field(col).metadata or {}
            out.append((f"field metadata of '{col}'",
                        {"zgrid": _kv(fm, "zgrid"), "encoding": _kv(fm, "pdf_encoding")}))
        out.append(("schema metadata 'pzpipe'", _info_from_pzpipe(parquet_meta(schema), col)))
    attrs = getattr(table, "attrs", None)
    if isinstance(attrs, dict) and attrs.get("pzpipe") is not None:
        out.append(("DataFrame.attrs['pzpipe']", _info_from_pzpipe(parquet_meta(attrs), col)))
    if release is not None:
        rs = _schema_of_release(release)
        if col in rs.names:
            fm = rs.field(col).metadata or {}
            out.append((f"release field metadata of '{col}'",
                        {"zgrid": _kv(fm, "zgrid"), "encoding": _kv(fm, "pdf_encoding")}))
        out.append(("release schema metadata 'pzpipe'", _info_from_pzpipe(parquet_meta(rs), col)))
    return out


def _columns(table) -> list[str]:
    if isinstance(table, (pa.Table, pa.RecordBatch)):
        return list(table.schema.names)
    if hasattr(table, "hc_structure") or hasattr(table, "dask") or hasattr(table, "_meta"):
        raise TypeError(f"{type(table).__name__} is lazy (lsdb/dask): select the rows you need "
                        f"and call .compute() first (every row given is decoded to "
                        f"a dense float64 PDF), e.g. cat.cone_search(...).compute(), or "
                        f"iterate over partitions")
    cols = getattr(table, "columns", None)
    if cols is None:
        raise TypeError(f"expected a pyarrow Table/RecordBatch or a pandas DataFrame, "
                        f"got {type(table).__name__}")
    return [str(c) for c in cols]


def _pdf_columns(names: list[str]) -> list[str]:
    return [c for c in names if c.endswith("_pdf")]


def _pick_column(table, algo: str | None, release) -> str:
    names = _columns(table)
    if algo is not None:
        col = f"{algo}_pdf"
        if col in names:
            return col
        if "pdf" in names:
            # an internal estimate file: accept it unless its metadata names another algorithm
            for _, info in _sources(table, "pdf", release):
                other = info.get("algorithm")
                if other and other != algo:
                    raise KeyError(f"no column '{col}'; the 'pdf' column holds {other} PDFs "
                                   f"(pzpipe metadata), not {algo}")
            return "pdf"
        avail = [c[:-4] for c in _pdf_columns(names)]
        raise KeyError(f"no column '{col}' in the table; PDF columns present: "
                       f"{', '.join(avail) if avail else 'none'} (select '{col}' when reading, "
                       f"e.g. lsdb.open_catalog(path, columns=[..., '{col}']))")
    if "pdf" in names:
        return "pdf"
    cands = _pdf_columns(names)
    if len(cands) == 1:
        return cands[0]
    raise KeyError("pass algo=: " + (f"the table has several PDF columns ({', '.join(cands)})"
                                     if cands else "the table has no 'pdf' or '<algo>_pdf' column"))


def pdf_info(table, algo: str | None = None, *, zgrid=None, release=None) -> dict:
    """Where the PDFs are and how to decode them: {column, zgrid, encoding, id_column,
    source} (source: where the grid was found)."""
    col = _pick_column(table, algo, release)
    srcs = _sources(table, col, release)
    z = None
    where = None
    if zgrid is not None:
        z, where = _grid(zgrid), "zgrid= argument"
    enc = None
    id_col = None
    for name, info in srcs:
        if z is None and info.get("zgrid") is not None:
            z, where = _zgrid.from_metadata(info["zgrid"]), name
        if enc is None and info.get("encoding"):
            enc = info["encoding"]
            enc = enc.decode() if isinstance(enc, bytes) else enc
        if id_col is None and info.get("id_column"):
            id_col = info["id_column"]
    if z is None:
        raise ValueError(
            f"no z grid for column '{col}': the table carries no pzpipe metadata (pandas and "
            f"lsdb frames usually drop it). Pass release=<path of the release directory> "
            f"(or an lsdb catalog of it), or zgrid=np.linspace(zmin, zmax, nz)")
    if enc is None:      # no metadata names one: the only encoding pzpipe has written
        enc = ENCODING
    if enc not in SUPPORTED_ENCODINGS:
        raise ValueError(f"column '{col}' uses PDF encoding '{enc}', which this reader does not "
                         f"know (it reads {', '.join(SUPPORTED_ENCODINGS)}): upgrade pzpipe")
    names = _columns(table)
    if id_col is None or id_col not in names:
        id_col = next((c for c in _ID_COLUMNS if c in names), None)
    return {"column": col, "zgrid": z, "encoding": enc, "id_column": id_col, "source": where}


def _column(table, name: str):
    if isinstance(table, (pa.Table, pa.RecordBatch)):
        return table.column(name)
    return table[name]


def _ids(table, name: str) -> np.ndarray:
    c = _column(table, name)
    if isinstance(c, (pa.Array, pa.ChunkedArray)):
        return c.to_numpy()
    return np.asarray(c.to_numpy())


def pdf_grid(table, algo: str | None = None, *, zgrid=None, release=None,
             engine: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(z, pdf)``: the z grid (nz,) and the PDFs (n_rows, nz) float64 of ``table``'s
    rows, in order. Null (invalid) PDFs are rows of NaN; valid ones integrate to 1
    (trapezoid rule on z). See the module docstring for ``algo``/``zgrid``/``release``."""
    info = pdf_info(table, algo, zgrid=zgrid, release=release)
    return info["zgrid"], decode(_column(table, info["column"]), info["zgrid"], engine=engine)


def to_ensemble(table, algo: str | None = None, *, zgrid=None, release=None,
                engine: str = "auto"):
    """``qp.Ensemble`` (``qp.interp`` on the release's z grid) of ``table``'s rows.

    ``ens.objdata["yvals"]`` holds the decoded PDFs exactly (no renormalisation: they
    integrate to 1 already); invalid (null) PDFs are rows of NaN (a warning says how
    many). The id column (``id_column`` of the metadata, else objectId/object_id) goes
    to ``ens.ancil``.
    """
    import qp

    info = pdf_info(table, algo, zgrid=zgrid, release=release)
    z = info["zgrid"]
    y = decode(_column(table, info["column"]), z, engine=engine)
    n_bad = int(np.isnan(y[:, 0]).sum()) if len(y) else 0
    if n_bad:
        warnings.warn(f"{n_bad} of {len(y)} PDFs in '{info['column']}' are null (the estimator "
                      f"gave no valid PDF; flags bit 17): their rows are NaN", RuntimeWarning,
                      stacklevel=2)
    ancil = None
    if info["id_column"] is not None:
        ancil = {info["id_column"]: _ids(table, info["id_column"])}
    return qp.Ensemble(qp.interp, data=dict(xvals=z, yvals=y, norm=False, warn=False),
                       ancil=ancil)
