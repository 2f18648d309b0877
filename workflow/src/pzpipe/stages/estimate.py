"""Estimate stage: photo-z PDFs and point estimates for one batch of chunks.

One Snakemake job = one batch. Its chunks (row groups of the partition file) are spread
over ``workers`` processes, each loading the model once and using one BLAS/OpenMP
thread; results are written in chunk order as one row group per chunk, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError, algorithms
from pzpipe.release import pdfstore
from pzpipe.run.config import config_hash
from pzpipe.run.provenance import sha256_file
from pzpipe.core.zgrid import from_config as make_zgrid, spec as zgrid_spec
from pzpipe.core.io import atomic_path
from pzpipe.stages.partition import ID_COL, read_meta
from pzpipe.release.pointest import FLAG_PDF_BAD, KEYS as POINT_COLS, point_estimates
from pzpipe.release.schema import extra_type

log = logging.getLogger(__name__)

_RUNNER = None
# config sections an estimate file depends on (hashed into its metadata; checked by the audit)
CONFIG_SECTIONS = ("bands", "partition", "zgrid", "algorithms", "estimate", "training")


def output_schema(algo: algorithms.Algorithm, zg: np.ndarray,
                  full_pdf: bool = False) -> pa.Schema:
    """Columns of an estimate file; ``full_pdf``: also ``pdf_full``, the float64 PDFs on
    the grid (validation only: the release stores ``pdf``)."""
    pdf_type = pdfstore.encode(np.ones((1, len(zg))), zg).type
    fields = [pa.field(ID_COL, pa.int64())]
    fields += [pa.field(c, pa.float32()) for c in POINT_COLS]
    fields += [pa.field(c, extra_type(algo, c)) for c in algo.extras.values()]
    fields += [pa.field("flags", pa.int32()), pa.field("pdf", pdf_type)]
    if full_pdf:
        fields.append(pa.field("pdf_full", pa.list_(pa.float64(), len(zg))))
    return pa.schema(fields)


def estimate_table(runner: algorithms.Runner, data: dict[str, np.ndarray], flags: np.ndarray,
                   chunk_index: int, bits: int, subchunk_rows: int = 2000,
                   full_pdf: bool = False) -> pa.Table:
    """Estimate one chunk and return its output table.

    The chunk is processed in sub-chunks of ``subchunk_rows`` objects, so that only the
    compressed PDFs of the whole chunk are held in memory: full-precision (N, 301)
    float64 PDFs, CDFs and RAIL's own ensembles exist for one sub-chunk at a time.
    Objects are independent, so results do not depend on the sub-chunk size (TPZ's
    random state is seeded once per chunk and then advances deterministically).
    ``full_pdf``: keep the float64 PDFs too (column ``pdf_full``; validation only).
    """
    z = runner.zgrid
    n = len(data[ID_COL])
    schema = output_schema(runner.algo, z, full_pdf)
    if n == 0:
        return schema.empty_table()
    parts = []
    # chunk-coupled algorithms (DNF) take the whole chunk and sub-chunk internally
    step = n if runner.algo.chunk_coupled else max(1, int(subchunk_rows))
    runner.begin_chunk(chunk_index)
    for s in range(0, n, step):
        sub = {k: v[s:s + step] for k, v in data.items()}
        pdf, extras = runner.estimate(sub, chunk_index, seed=False)
        pe, bad = point_estimates(pdf, z)
        m = len(bad)
        cols = {ID_COL: pa.array(np.asarray(sub[ID_COL], dtype=np.int64))}
        for c in POINT_COLS:
            cols[c] = pa.array(pe[c].astype(np.float32))
        for c in runner.algo.extras.values():
            t = extra_type(runner.algo, c)
            v = extras.get(c)
            if v is None:       # not returned: NaN (float) or a null column (integer)
                cols[c] = pa.nulls(m, t) if pa.types.is_integer(t) else pa.array(np.full(m, np.nan), t)
            elif pa.types.is_integer(t):       # counts: NaN (no value) -> null
                v = np.asarray(v, dtype=np.float64)
                cols[c] = pa.array(np.where(np.isfinite(v), v, 0).astype(t.to_pandas_dtype()),
                                   mask=~np.isfinite(v))
            else:
                cols[c] = pa.array(np.asarray(v, dtype=t.to_pandas_dtype()))
        f = flags[s:s + step]
        cols["flags"] = pa.array((f | np.where(bad, FLAG_PDF_BAD, 0)).astype(np.int32))
        cols["pdf"] = pdfstore.encode(pdf, z, bits=bits)
        if full_pdf:
            cols["pdf_full"] = pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray(pdf, dtype=np.float64).ravel()), len(z))
        del pdf, pe
        parts.append(pa.table(cols, schema=schema))
    return pa.concat_tables(parts).combine_chunks()


def _limit_threads():
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def _init_worker(algo_name, model_path, cfg, data_dir=None):
    global _RUNNER
    _limit_threads()
    _RUNNER = algorithms.Runner(algorithms.get(algo_name), model_path, cfg,
                                name=f"w{os.getpid()}", data_dir=data_dir)
    # RAIL runs a full gc.collect() after every estimate call (~0.15 s with FlexZBoost's
    # model and the libraries loaded: ~75 us/object at 2,000-object sub-chunks); the
    # objects alive now (modules, the model) live as long as the worker: keep them out
    # of every later collection
    import gc

    gc.collect()
    gc.freeze()


def _read_row_group(path: str, rg: int, columns=None) -> dict[str, np.ndarray]:
    t = pq.ParquetFile(path).read_row_group(rg, columns=columns)
    return {name: t.column(name).to_numpy() for name in t.column_names}


def _work(args):
    path, rg, chunk_index, bits, full_pdf = args
    data = _read_row_group(path, rg)
    flags = data.pop("flags")
    t0 = time.perf_counter()
    table = estimate_table(_RUNNER, data, flags, chunk_index, bits,
                           _RUNNER.cfg["estimate"]["subchunk_rows"], full_pdf)
    return table, time.perf_counter() - t0


def run_batch(algo_name: str, partition_file: str, model_path: str, cfg: dict,
              output: str, workers: int = 1, data_dir: str | None = None,
              full_pdf: bool = False) -> dict:
    """Estimate every chunk of ``partition_file`` with ``algo_name`` into ``output``.

    ``data_dir``: the algorithm's prepared data directory, if it declares one;
    ``full_pdf``: keep the float64 PDFs as well (``estimate_table``)."""
    algo = algorithms.get(algo_name)
    meta = read_meta(partition_file)
    bits = int(cfg["estimate"]["pdf_bits"])
    tasks = [(partition_file, ch["row_group"], ch["chunk"], bits, full_pdf)
             for ch in meta["chunks"] if ch["row_group"] is not None]
    schema = output_schema(algo, make_zgrid(cfg), full_pdf)
    out_meta = {
        "algorithm": algo_name, "batch": meta["batch"],
        "zgrid": zgrid_spec(cfg),
        "pdf_encoding": pdfstore.ENCODING, "pdf_bits": bits,
        "config_hash": config_hash(cfg, list(CONFIG_SECTIONS)),
        "model_sha256": sha256_file(model_path),
        "chunks": [{"chunk": ch["chunk"], "rows": ch["rows_out"]} for ch in meta["chunks"]],
    }
    workers = max(1, min(int(workers), max(1, len(tasks))))
    t0 = time.time()
    n_rows = 0
    with atomic_path(output) as tmp:
        with pq.ParquetWriter(tmp, schema, **pdfstore.PARQUET_KWARGS) as writer:
            if workers == 1:
                _init_worker(algo_name, model_path, cfg, data_dir)
                results = map(_work, tasks)
                pool = None
            else:
                pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                           initargs=(algo_name, model_path, cfg, data_dir))
                results = pool.map(_work, tasks)
            try:
                for (path, rg, chunk_index, _, _), (table, secs) in zip(tasks, results):
                    expected = meta["chunks"][[c["chunk"] for c in meta["chunks"]].index(chunk_index)]["rows_out"]
                    if table.num_rows != expected:
                        raise PipelineError(f"{algo_name} chunk {chunk_index}: {table.num_rows} "
                                            f"rows out, {expected} in; refusing to write")
                    writer.write_table(table, row_group_size=max(table.num_rows, 1))
                    n_rows += table.num_rows
                    log.info("%s chunk %d: %d objects in %.1f s (%.0f obj/s)", algo_name,
                             chunk_index, table.num_rows, secs, table.num_rows / max(secs, 1e-9))
            finally:
                if pool is not None:
                    _stop_pool(pool)
            out_meta["rows"] = n_rows   # no timings here: outputs must be byte-reproducible
            writer.add_key_value_metadata({"pzpipe": json.dumps(out_meta)})
    log.info("%s %s: %d objects in %.1f s with %d worker(s)", algo_name, meta["batch"], n_rows,
             time.time() - t0, workers)
    return out_meta


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting on workers that a library left busy."""
    procs = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()


def estimate_sample(algo_name: str, model_path: str, cfg: dict, data: dict[str, np.ndarray],
                    chunk_rows: int, workers: int = 1, data_dir: str | None = None,
                    full_pdf: bool = False) -> pa.Table:
    """Estimate an in-memory sample (validation) with exactly the release code path:
    the sample is written as a temporary partition file with one row group per
    ``chunk_rows`` rows and estimated by ``run_batch`` with ``workers`` processes. The
    chunking does not depend on ``workers``, so neither does the result (DNF couples the
    objects of a chunk, TPZ and CMNN seed per chunk)."""
    import tempfile

    from pzpipe.stages.partition import partition_schema, sample_chunks, write_partition

    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise PipelineError(f"estimate_sample: chunk_rows must be >= 1, got {chunk_rows}")
    schema = partition_schema({**cfg, "columns": {**cfg["columns"], "ra": None, "dec": None}})
    with tempfile.TemporaryDirectory(prefix="pzpipe-sample-") as td:
        part = os.path.join(td, "sample.parquet")
        write_partition(part, schema, sample_chunks(data, schema, chunk_rows), {"batch": "sample"})
        out = os.path.join(td, "estimates.parquet")
        run_batch(algo_name, part, model_path, cfg, out, workers=workers, data_dir=data_dir,
                  full_pdf=full_pdf)
        return pq.read_table(out)

