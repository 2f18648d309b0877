"""Step 3: import parquet photometry as a HATS collection (catalog + margin cache)."""

from __future__ import annotations

from pzpipe.core.hatsio import dask_client, is_hats  # noqa: F401  (shared with the Object import)
from ._common import log_to


def _parquet_inputs(inputs) -> list[str]:
    """Parquet files named by paths, directories (recursive) and globs."""
    from pzpipe.core.hatsio import expand_paths

    return expand_paths(inputs, "trainset.photometry.path", suffixes=(".parquet", ".pq"))


def import_photometry_hats(inputs, output, *, ra_column: str = "ra", dec_column: str = "dec",
                           catalog_name: str = "photometry", pixel_threshold: int = 1_000_000,
                           highest_order: int = 10, margin_arcsec: float = 5.0, margin_order: int = -1,
                           threads: int = 1, mem_mb: int = 4000, scheduler: str | None = None,
                           tmp_dir=None, log: str | None = None) -> str:
    """Import parquet photometry (a file, a directory searched recursively for
    ``*.parquet``, a glob, or a list of those) into a HATS *collection* at ``output``:
    ``output/<catalog_name>/`` (partitioned so that no pixel holds more than
    ``pixel_threshold`` rows, down to ``highest_order``) plus the default margin cache
    ``output/<catalog_name>_margin/`` holding the rows within ``margin_arcsec`` of
    each partition (must be >= the crossmatch radius; ``margin_order`` >= 0 instead
    takes whole HEALPix pixels of that order, a wider margin that is faster to plan).
    ``lsdb.open_catalog(output)`` loads both. hats-import runs on
    :func:`pzpipe.core.hatsio.dask_client` (``threads`` workers, ``mem_mb`` in total, or a
    running ``scheduler``). Files lacking the coordinate columns are named before the
    import starts. A failed import removes ``output``."""
    from pzpipe.core.hatsio import check_same_columns, import_catalog

    with log_to(log):
        files = _parquet_inputs(inputs)
        check_same_columns(files, [ra_column, dec_column], "trainset.photometry.path")
        return import_catalog(files, output, ra_column=ra_column, dec_column=dec_column,
                              catalog_name=catalog_name, pixel_threshold=pixel_threshold,
                              highest_order=highest_order, margin_arcsec=margin_arcsec,
                              margin_order=margin_order, threads=threads, mem_mb=mem_mb,
                              scheduler=scheduler, tmp_dir=tmp_dir)
