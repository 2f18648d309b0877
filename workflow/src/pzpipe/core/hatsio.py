"""HATS catalogs: recognise, read their layout from metadata, import, and write.

One home for what the pipeline does with HATS (the input Object catalog, the release,
the training-set maker's photometry):

* :func:`is_hats`, :func:`catalog_dir` - is a path a HATS catalog or collection, and
  where is its main catalog;
* :func:`pixel_counts` - the catalog's pixels and their row counts from metadata only
  (``partition_info.csv`` + ``per_partition_statistics.parquet`` or ``dataset/_metadata``;
  the pixel files' footers only as a last resort), so that a release can be planned
  without reading any data;
* :func:`pixel_file` and :func:`pixel_sort_key` - where a pixel's file is, and the
  depth-first (Z-order) order that keeps consecutive pixels neighbours on the sky;
* :func:`dask_client` and :func:`import_catalog` - hats-import on a local dask cluster
  or on a running scheduler (e.g. dask-jobqueue on Slurm, ``scheduler_file``);
* :func:`write_catalog_files` - the catalog-level files of a catalog whose pixel files
  are already written (partition info, ``_common_metadata``, properties), with the hats
  library's own writers.

Scale: at 40e9 objects a catalog has ~20k pixels; every function here holds at most one
entry per pixel (a few MB), never per object.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

from pzpipe import PipelineError

log = logging.getLogger(__name__)

HEALPIX_COL = "_healpix_29"
HEALPIX_ORDER = 29
PROPERTIES_FILES = ("collection.properties", "hats.properties", "properties")


# ---------------------------------------------------------------------------- reading
def is_hats(path) -> bool:
    """True when ``path`` is a HATS catalog or collection directory (cheap: looks for a
    ``hats.properties``, ``collection.properties`` or legacy ``properties`` file)."""
    p = Path(str(path))
    return p.is_dir() and any((p / f).is_file() for f in PROPERTIES_FILES)


def catalog_dir(path, key: str = "inputs.hats") -> str:
    """The main catalog directory of a HATS catalog or collection at ``path``.

    Raises PipelineError naming ``key`` when ``path`` is not a HATS catalog."""
    p = Path(str(path))
    if not p.exists():
        hint = (" The default input is written by `make demo` (python -m pzpipe.planning.synth "
                "resources/dc2_object_hats) in the repository; run it, or run Snakemake from "
                "the repository's directory." if p.name == "dc2_object_hats" else "")
        raise PipelineError(f"{key}: '{path}' does not exist (relative paths are relative "
                            f"to Snakemake's working directory, {os.getcwd()}). Point {key} "
                            f"at a HATS catalog directory (the one holding 'properties' or "
                            f"'collection.properties').{hint}")
    if not is_hats(p):
        hint = ""
        if p.is_dir() and any(p.glob("*.parquet")):
            hint = (" It holds parquet files: list them (or the directory/glob) under "
                    "inputs.files instead.")
        raise PipelineError(f"{key}: '{path}' is not a HATS catalog (no properties, "
                            f"hats.properties or collection.properties file).{hint}")
    if (p / "collection.properties").is_file():
        props = _read_properties_file(p / "collection.properties")
        inner = props.get("hats_primary_table_url")
        if not inner:
            raise PipelineError(f"{key}: collection '{path}' has no hats_primary_table_url "
                                f"in collection.properties")
        q = p / inner
        if not is_hats(q):
            raise PipelineError(f"{key}: collection '{path}' names main catalog '{inner}', "
                                f"which is not a HATS catalog directory")
        return str(q)
    return str(p)


def _read_properties_file(path) -> dict:
    from jproperties import Properties

    props = Properties()
    with open(path, "rb") as f:
        props.load(f, "utf-8")
    return {k: v.data for k, v in props.items()}


def read_properties(catdir) -> dict:
    """The catalog's properties as a plain dict (keys as in the file)."""
    p = Path(catdir)
    for name in ("hats.properties", "properties"):
        if (p / name).is_file():
            return _read_properties_file(p / name)
    raise PipelineError(f"'{catdir}' has no hats.properties/properties file")


def catalog_schema(catdir):
    """Arrow schema of the catalog (``dataset/_common_metadata`` or ``_metadata``, else the
    first pixel file)."""
    import pyarrow.parquet as pq

    d = Path(catdir) / "dataset"
    for name in ("_common_metadata", "_metadata"):
        if (d / name).is_file():
            return pq.read_schema(d / name)
    first = next(iter(sorted(d.rglob("Npix=*.parquet"))), None)
    if first is None:
        raise PipelineError(f"HATS catalog '{catdir}' has no pixel files under dataset/")
    return pq.read_schema(first)


def pixel_file(catdir, order: int, pix: int) -> str:
    """Path of a pixel's parquet file: ``dataset/Norder=k/Dir=d/Npix=p.parquet``."""
    d = (int(pix) // 10_000) * 10_000
    return os.path.join(str(catdir), "dataset", f"Norder={int(order)}", f"Dir={d}",
                        f"Npix={int(pix)}.parquet")


def pixel_sort_key(order: int, pix: int) -> int:
    """Depth-first (nested, Z-order) position of a pixel: consecutive keys are neighbours
    on the sky, so consecutive pixels make compact batches."""
    return int(pix) << (2 * (HEALPIX_ORDER - int(order)))


def read_partition_info(catdir) -> list[tuple[int, int]]:
    import csv

    path = Path(catdir) / "partition_info.csv"
    if not path.is_file():
        raise PipelineError(f"HATS catalog '{catdir}' has no partition_info.csv; write it with "
                            f"hats (PartitionInfo.write_to_file) or re-import the catalog")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [(int(r["Norder"]), int(r["Npix"])) for r in rows]
    except (KeyError, ValueError) as exc:
        raise PipelineError(f"'{path}': expected columns Norder,Npix ({exc})") from exc


def pixel_counts(catdir) -> tuple[list[tuple[int, int, int]], str]:
    """``([(order, pix, nrows), ...] in depth-first order, source)`` from metadata only.

    Row counts come from ``per_partition_statistics.parquet`` (written by hats/lsdb), else
    ``dataset/_metadata``, else each pixel file's footer (slow for many pixels: it is
    logged). ``source`` says which was used. A pixel listed in partition_info.csv but
    missing from the statistics is an error naming the file."""
    import pyarrow.parquet as pq

    catdir = str(catdir)
    pixels = read_partition_info(catdir)
    props = read_properties(catdir)
    suffix = props.get("hats_npix_suffix", ".parquet")
    if suffix != ".parquet":
        raise PipelineError(f"HATS catalog '{catdir}' stores pixels as '{suffix}' "
                            f"(hats_npix_suffix); only one parquet file per pixel is supported")
    counts: dict[tuple[int, int], int] = {}
    source = None
    stats = Path(catdir) / "per_partition_statistics.parquet"
    meta = Path(catdir) / "dataset" / "_metadata"
    if stats.is_file():
        names = pq.read_schema(stats).names
        rc = next((c for c in names if c.endswith("::row_count")), None)
        if rc is not None:
            t = pq.read_table(stats, columns=["Norder", "Npix", rc])
            for k, p, n in zip(t.column("Norder").to_pylist(), t.column("Npix").to_pylist(),
                               t.column(rc).to_pylist()):
                key = (int(k), int(p))
                counts[key] = counts.get(key, 0) + int(n)
            source = "per_partition_statistics.parquet"
    if source is None and meta.is_file():
        from hats.io import paths

        md = pq.read_metadata(meta)
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            px = paths.get_healpix_from_path(rg.column(0).file_path)
            key = (int(px.order), int(px.pixel))
            counts[key] = counts.get(key, 0) + rg.num_rows
        source = "dataset/_metadata"
    if source is None:
        t0 = time.time()
        for k, p in pixels:
            f = pixel_file(catdir, k, p)
            try:
                counts[(k, p)] = pq.ParquetFile(f).metadata.num_rows
            except FileNotFoundError:
                raise PipelineError(f"HATS catalog '{catdir}': pixel file '{f}' listed in "
                                    f"partition_info.csv does not exist") from None
        source = "pixel file footers"
        log.info("row counts of %d pixels read from their footers in %.1f s (write "
                 "per_partition_statistics.parquet or `pzpipe describe` to avoid this)",
                 len(pixels), time.time() - t0)
    missing = [px for px in pixels if px not in counts]
    if missing:
        k, p = missing[0]
        raise PipelineError(f"HATS catalog '{catdir}': {len(missing)} pixel(s) of "
                            f"partition_info.csv have no row count in {source} (e.g. "
                            f"'{pixel_file(catdir, k, p)}'); the metadata is stale: rewrite it "
                            f"with hats.io.write_parquet_metadata")
    out = sorted(((k, p, counts[(k, p)]) for k, p in pixels), key=lambda x: pixel_sort_key(x[0], x[1]))
    return out, source


def coordinate_columns(catdir) -> tuple[str | None, str | None]:
    props = read_properties(catdir)
    return props.get("hats_col_ra"), props.get("hats_col_dec")


def spatial_index(ra, dec):
    """``_healpix_29`` of positions in degrees (the HATS spatial index)."""
    import numpy as np
    from hats.pixel_math.spatial_index import compute_spatial_index

    return np.asarray(compute_spatial_index(np.asarray(ra, dtype=np.float64),
                                            np.asarray(dec, dtype=np.float64)), dtype=np.int64)


# ---------------------------------------------------------------------------- import
@contextlib.contextmanager
def dask_client(threads: int = 1, mem_mb: int = 4000, *, scheduler: str | None = None,
                tmp_dir=None, processes: bool | None = None):
    """A dask ``Client``: connect to ``scheduler`` (address or scheduler-file path,
    e.g. a dask-jobqueue cluster, docs/clusters.md) if given, else start a local cluster
    of ``threads`` single-threaded worker processes sharing ``mem_mb`` MB
    (``processes=False``: one worker with ``threads`` threads). No dashboard."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        if os.path.exists(str(scheduler)):
            client = Client(scheduler_file=str(scheduler))
        else:
            client = Client(str(scheduler))
        try:
            yield client
        finally:
            client.close()
        return
    logging.getLogger("distributed").setLevel(logging.WARNING)  # keep job logs readable
    threads = max(1, int(threads))
    if processes is None:
        processes = threads > 1
    n_workers = threads if processes else 1
    per_worker = max(256, int(mem_mb) // n_workers)
    kw = {"local_directory": str(tmp_dir)} if tmp_dir else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1 if processes else threads,
                               processes=processes, memory_limit=f"{per_worker}MB",
                               dashboard_address=None,  # no dashboard; the scheduler's small
                               scheduler_kwargs={"dashboard_address": ":0"},  # http server: any port
                               **kw)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def expand_paths(items, key: str, suffixes=(".parquet", ".pq", ".hdf5", ".h5", ".hdf")) -> list[str]:
    """Files named by ``items``: paths, directories (searched recursively for files with
    ``suffixes``) and globs (``*``, ``?``, ``[``; ``**`` recursive), sorted within each
    item; duplicates removed. Raises PipelineError naming ``key`` when an item matches
    nothing."""
    import glob

    if isinstance(items, (str, os.PathLike)):
        items = [items]
    out: list[str] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
                           and not f.name.startswith((".", "_")))
            if not found:
                raise PipelineError(f"{key}: directory '{s}' holds no {'/'.join(suffixes)} files")
        elif any(ch in s for ch in "*?["):
            found = sorted(f for f in glob.glob(s, recursive=True) if os.path.isfile(f))
            if not found:
                raise PipelineError(f"{key}: the pattern '{s}' matches no file")
        else:
            found = [s]
        out += found
    return list(dict.fromkeys(out))


def check_same_columns(files: list[str], need: list[str], key: str) -> None:
    """Every parquet file has the ``need``ed columns; else one error naming the first file
    that lacks one (hats-import would fail later with a bare KeyError)."""
    import pyarrow.parquet as pq

    for f in files:
        try:
            names = set(pq.read_schema(f).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise PipelineError(f"{key}: '{f}' is not a readable parquet file ({exc}). "
                                f"Remove it or re-stage it.") from exc
        missing = [c for c in need if c not in names]
        if missing:
            raise PipelineError(f"{key}: file '{f}' has no column(s) {missing} (its schema "
                                f"differs from the other files'). Every input file needs "
                                f"the same columns: remove the odd file or fix the column "
                                f"names in the config.")


def import_catalog(files: list[str], output, *, ra_column: str, dec_column: str,
                   catalog_name: str, pixel_threshold: int = 1_000_000, highest_order: int = 10,
                   margin_arcsec: float | None = None, margin_order: int = -1,
                   threads: int = 1, mem_mb: int = 4000, scheduler: str | None = None,
                   tmp_dir=None, file_reader: str = "parquet") -> str:
    """Import parquet files into a HATS catalog at ``output`` with hats-import.

    Without ``margin_arcsec``: a plain catalog (``output`` is the catalog). With it: a
    collection ``output/<catalog_name>/`` + the default margin cache
    ``output/<catalog_name>_margin/``. Partitioned so that no pixel holds more than
    ``pixel_threshold`` rows, down to ``highest_order``. Runs on :func:`dask_client`
    (``threads`` local workers sharing ``mem_mb``, or ``scheduler``). A failed import
    removes ``output``. Writes ``per_partition_statistics.parquet`` so that the layout of
    the catalog can be read from metadata."""
    from hats_import import CollectionArguments, ImportArguments
    from hats_import.pipeline import pipeline_with_client

    t0 = time.time()
    output = Path(output)
    log.info("importing %d file(s) into HATS %s (pixel_threshold=%d)", len(files), output,
             pixel_threshold)
    # hats-import records absolute paths (margin -> primary catalog): write in place, and
    # remove a failed import
    if output.exists():
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # the work directory of an import killed before its cleanup is an orphan (P9)
    from pzpipe.core.io import remove_stale_tmp, tmp_name

    remove_stale_tmp(output)
    tmp_base = Path(tmp_dir) if tmp_dir else Path(tmp_name(output))
    common = {"progress_bar": False, "resume": False, "tmp_dir": str(tmp_base),
              "dask_tmp": str(tmp_base / "dask")}
    cat_kw = dict(input_file_list=list(files), file_reader=file_reader, ra_column=ra_column,
                  dec_column=dec_column, pixel_threshold=int(pixel_threshold),
                  highest_healpix_order=int(highest_order))
    try:
        if margin_arcsec is None:
            args = ImportArguments(output_path=str(output.parent), output_artifact_name=output.name,
                                   **cat_kw, **common)
        else:
            args = (CollectionArguments(output_path=str(output.parent),
                                        output_artifact_name=output.name, **common)
                    .catalog(**cat_kw, output_artifact_name=catalog_name)
                    .add_margin(margin_threshold=float(margin_arcsec), margin_order=int(margin_order),
                                output_artifact_name=f"{catalog_name}_margin", is_default=True))
        with dask_client(threads, mem_mb, scheduler=scheduler, tmp_dir=tmp_base / "dask") as client:
            pipeline_with_client(args, client)
        main = Path(catalog_dir(output, "import"))
        if not (main / "per_partition_statistics.parquet").is_file():
            from hats.io import write_parquet_metadata

            write_parquet_metadata(main, create_per_partition_stats=True)
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)
        raise
    finally:
        if not tmp_dir:
            shutil.rmtree(tmp_base, ignore_errors=True)
    log.info("HATS import done in %.1f s", time.time() - t0)
    return str(output)


# ---------------------------------------------------------------------------- writing
def write_catalog_files(root, pixels: list[tuple[int, int]], schema, *, catalog_name: str,
                        total_rows: int, ra_column: str, dec_column: str,
                        extra_properties: dict | None = None) -> None:
    """The catalog-level files of a HATS catalog whose pixel files exist under
    ``root/dataset``: ``partition_info.csv``, ``dataset/_common_metadata`` (``schema``,
    with its field and schema metadata) and ``properties``/``hats.properties``, written
    with the hats library. ``dataset/_metadata`` is not written: it would combine every
    pixel file's footer (GBs at release scale) and lsdb does not need it."""
    import pyarrow.parquet as pq
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math.healpix_pixel import HealpixPixel

    root = Path(root)
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    pinfo = PartitionInfo.from_healpix([HealpixPixel(k, p) for k, p in pixels])
    pinfo.write_to_file(root / "partition_info.csv")
    pq.write_metadata(schema, root / "dataset" / "_common_metadata")
    max_order = max((k for k, _ in pixels), default=0)
    props = TableProperties(catalog_name=catalog_name, catalog_type="object",
                            total_rows=int(total_rows), ra_column=ra_column,
                            dec_column=dec_column, healpix_column=HEALPIX_COL,
                            healpix_order=HEALPIX_ORDER, hats_order=max_order,
                            **(extra_properties or {}))
    props.to_properties_file(root)
