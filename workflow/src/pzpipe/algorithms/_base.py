"""What every estimator module declares (``Algorithm``, ``FastPath``, ``DataDir``) and the
helpers they share: RAIL parameters from the pipeline config, seeding, scoped patches and
the version guard of the fast paths.

Nothing here names an estimator: estimator-specific code lives in the estimator's module
(``bpz.py``, ``fzboost.py``, ...), which declares an ``ALGORITHM``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pzpipe.core.columns import ID_COL, err_col, mag_col

log = logging.getLogger("pzpipe.algorithms")


@dataclass(frozen=True)
class FastPath:
    """pzpipe's faster code for RAIL's estimator, used when ``algorithms.<name>.fast`` is
    true (the default) and the installed packages are those it was verified on.

    ``kind``:
      * ``"standalone"``: a class ``C(model, params)`` with ``C.estimate(data) -> (pdf on
        the pipeline grid (N, nz), dict RAIL-ancil-key -> array)``; ``model`` is the
        unpickled model file, ``params`` the estimator's RAIL parameters. RAIL is not called.
      * ``"estimator"``: a subclass of RAIL's estimator class, used in its place.
      * ``"context"``: a context manager (no arguments) entered around each RAIL
        ``estimate`` call (e.g. swapping functions inside a library while active).
    ``verified``: distribution -> version (or tuple of versions) the equivalence tests
    ran on. Any other installed version disables the fast path (one warning line) and
    the pipeline runs RAIL's own code.
    ``guarantee``: what the equivalence tests prove (docs and ``guarantees()``).
    """

    ref: str
    kind: str
    verified: Mapping[str, Any]
    guarantee: str

    def __post_init__(self):
        if self.kind not in ("standalone", "estimator", "context"):
            raise ValueError(f"FastPath.kind must be standalone, estimator or context, not {self.kind!r}")


@dataclass(frozen=True)
class DataDir:
    """A writable data directory an estimator needs, prepared once per run by the
    ``prepare_data`` rule (``results/<name>_data``) before any training or estimate job.

    ``param``: the RAIL parameter that receives its absolute path.
    ``prepare(cfg, out_dir)``: fills ``out_dir`` (a fresh temporary directory; the caller
    renames it into place when ``prepare`` returns)."""

    param: str
    prepare: Callable[[dict, str], None]


@dataclass(frozen=True)
class Algorithm:
    """One RAIL estimator as the pipeline runs it. Declared once, in the estimator's module.

    Hooks (all optional) let the module handle its RAIL traps without any estimator name
    appearing in the shared code:

    ``params(cfg, kind)``     RAIL parameters the pipeline always sets for ``kind``
                              ('inform' / 'estimate'), before the user's config block.
    ``finalize(params, kind)``  checks/adjusts the final RAIL parameters, after the user's
                              block (e.g. put a dict in band order); returns them.
    ``estimate_chunk(runner, data)``  replaces the single RAIL call on a chunk (DNF's
                              two-pass sub-chunking); returns (pdf, ancil dict).
    ``ancillaries(ens)``      more per-object values taken from RAIL's ``qp.Ensemble``
                              (e.g. a Gaussian's loc/scale), merged into its ancil.
    ``before_call(runner, chunk_index, offset)``  called before every estimate call with
                              the chunk and the row offset of the call inside the chunk.
    ``postprocess(runner, pdf, ancil)``  after every estimate call (RAIL or fast path).
    ``input_transform(data, params)``  rewrites the (copied) input columns before RAIL sees
                              them, in training and estimation; returns the dict.
    ``clean_model(model)``    the trained model before it is written, without run-specific
                              state (wall-clock times) so that the file is byte-reproducible.
    ``clean_params(params)``  the RAIL parameters the release records (``rail.json``)
                              without this machine's paths (LePhare: ``$LEPHAREDIR``).
    """

    name: str
    module: str                        # RAIL module
    informer: str                      # RAIL informer class name
    estimator: str                     # RAIL estimator class name
    distribution: str                  # PyPI package that provides the RAIL module
    title: str = ""
    extras: dict = field(default_factory=dict)       # RAIL ancil key -> output column
    extra_meta: dict = field(default_factory=dict)   # output column -> {description, unit}
    extra_dtypes: dict = field(default_factory=dict)  # output column -> dtype if not float32
    params: Callable[[dict, str], dict] | None = None
    finalize: Callable[[dict, str], dict] | None = None
    data_dir: DataDir | None = None
    seed_global_rng: bool = False      # seed numpy's global RNG and `random` per chunk
    chunk_coupled: bool = False        # results depend on the whole chunk: never split it
    estimate_chunk: Callable | None = None
    ancillaries: Callable | None = None
    before_call: Callable | None = None
    postprocess: Callable | None = None
    input_transform: Callable | None = None
    clean_model: Callable | None = None
    clean_params: Callable | None = None
    fast: FastPath | None = None
    pdf_family: str = "interp"         # RAIL's qp parameterisation ("norm": Gaussian)
    audit_tolerance: float = 0.0       # 0: a recomputed chunk must be bit-identical
    bench: dict = field(default_factory=dict)        # rows, reference_hours, ... (pzpipe.planning.bench)
    enabled_by_default: bool = True
    requires: tuple = ()               # importable modules besides `module` (checked by available())
    # the estimator's own settings under ``algorithms.<name>`` besides enabled / inform /
    # estimate / fast: JSON-schema properties (type, default, description), validated and
    # filled in by pzpipe.run.config from this declaration (e.g. DNF's ``subchunk``)
    settings: dict = field(default_factory=dict)

    def classes(self):
        mod = importlib.import_module(self.module)
        return getattr(mod, self.informer), getattr(mod, self.estimator)

    def available(self) -> tuple[bool, str]:
        """(True, "") if RAIL's classes import, else (False, the reason)."""
        try:
            for m in (self.module, *self.requires):
                importlib.import_module(m)
        except Exception as exc:  # noqa: BLE001 - any import failure makes it unusable
            return False, f"{type(exc).__name__}: {exc}"
        return True, ""


def load_ref(ref: str):
    """'module:name' -> the object."""
    mod, name = ref.split(":")
    return getattr(importlib.import_module(mod), name)


# ----------------------------------------------------------------------------------------
# RAIL parameters
# ----------------------------------------------------------------------------------------
def common_params(cfg: dict) -> dict:
    """RAIL parameters shared by every algorithm, from the pipeline config."""
    bands = cfg["bands"]
    z = cfg["zgrid"]
    return dict(
        bands=[mag_col(b) for b in bands],
        err_bands=[err_col(b) for b in bands],
        ref_band=mag_col(cfg["ref_band"]),
        nondetect_val=float(cfg["partition"]["nondetect_val"]),
        zmin=float(z["zmin"]), zmax=float(z["zmax"]), nzbins=int(z["nz"]),
        hdf5_groupname="", id_col=ID_COL, redshift_col="redshift",
    )


def data_dir_path(algo: Algorithm, results_dir: str = "results") -> str:
    """Absolute path of ``algo``'s prepared data directory for standalone use (tests,
    benchmarks): ``<results_dir>/<name>_data``. The workflow does not use it: its rules
    pass the directory (``PATHS["algo_data"]`` of ``workflow/rules/common.smk``)."""
    return os.path.abspath(f"{results_dir}/{algo.name}_data")


def stage_params(algo: Algorithm, cfg: dict, kind: str, data_dir: str | None = None) -> dict:
    """Full RAIL parameter dict for ``kind`` in {'inform', 'estimate'}: the shared ones,
    the algorithm's own (its module's ``params`` hook), then the user's config block
    ``algorithms.<name>.<kind>`` (unknown keys are config errors: RAIL would ignore them),
    then the module's ``finalize`` hook.

    ``data_dir``: the prepared data directory of an algorithm that declares one (rule
    ``prepare_data``; the rules pass it); None: ``data_dir_path(algo)``."""
    params = common_params(cfg)
    if algo.data_dir is not None:
        params[algo.data_dir.param] = (os.path.abspath(data_dir) if data_dir
                                       else data_dir_path(algo))
    if algo.params is not None:
        params.update(algo.params(cfg, kind))
    user = (cfg["algorithms"].get(algo.name) or {}).get(kind, {}) or {}
    if user:
        inf_cls, est_cls = algo.classes()
        cls = inf_cls if kind == "inform" else est_cls
        unknown = [k for k in user if k not in cls.config_options]
        if unknown:
            from .. import PipelineError

            close = difflib.get_close_matches(unknown[0], list(cls.config_options), n=3)
            raise PipelineError(
                f"config error at 'algorithms.{algo.name}.{kind}': '{unknown[0]}' is not a "
                f"parameter of RAIL's {cls.__name__}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + " - RAIL would silently ignore it. See the class's config_options.")
    params.update(user)
    if algo.finalize is not None:
        params = algo.finalize(params, kind)
    return params


def rail_default(algo: Algorithm, kind: str, key: str):
    """Default of RAIL's parameter ``key`` of the informer ('inform') or estimator."""
    from ceci.config import StageParameter

    inf_cls, est_cls = algo.classes()
    opt = (inf_cls if kind == "inform" else est_cls).config_options[key]
    if isinstance(opt, StageParameter):
        return opt.default
    return opt[key]          # a shared parameter: RAIL's SHARED_PARAMS config holds it


# ----------------------------------------------------------------------------------------
# seeding
# ----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    np.random.seed(seed % (2**32))
    random.seed(seed)


@contextlib.contextmanager
def seeded_default_rng(seed: int):
    """Make unseeded ``np.random.default_rng()`` calls deterministic while active.

    Inside this context, every unseeded call gets the next child of
    ``SeedSequence(seed)``; calls with an explicit seed are unchanged.
    """
    orig = np.random.default_rng
    seq = np.random.SeedSequence(int(seed))

    def patched(seed=None, *args, **kwargs):
        if seed is None:
            seed = seq.spawn(1)[0]
        return orig(seed, *args, **kwargs)

    np.random.default_rng = patched
    try:
        yield
    finally:
        np.random.default_rng = orig


def chunk_seed(base: int, chunk_index: int) -> int:
    return (int(base) * 1_000_003 + int(chunk_index)) % (2**32)


@contextlib.contextmanager
def patched(module, **funcs):
    """Replace attributes of ``module`` while active (restored on exit)."""
    orig = {k: getattr(module, k) for k in funcs}
    for k, f in funcs.items():
        setattr(module, k, f)
    try:
        yield
    finally:
        for k, f in orig.items():
            setattr(module, k, f)


def release_memory() -> None:
    """Collect garbage and return freed heap to the OS."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


# ----------------------------------------------------------------------------------------
# version guard of the fast paths
# ----------------------------------------------------------------------------------------
_WARNED: set = set()


def installed_version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def version_mismatches(fast: FastPath) -> list[str]:
    """'dist installed X (verified: Y)' for every package not at a verified version."""
    out = []
    for dist, ok in fast.verified.items():
        allowed = (ok,) if isinstance(ok, str) else tuple(ok)
        have = installed_version(dist)
        if have not in allowed:
            out.append(f"{dist} {have or 'not installed'} (verified: {', '.join(allowed)})")
    return out


def fast_path_for(algo: Algorithm, cfg: dict) -> FastPath | None:
    """The fast path to use for ``algo`` under ``cfg``, or None for RAIL's own code.

    None when the algorithm has none, when ``algorithms.<name>.fast`` is false, or when
    an installed package differs from the versions its equivalence tests ran on; the
    last case logs one warning line (once per process and algorithm)."""
    fp = algo.fast
    if fp is None or not (cfg["algorithms"].get(algo.name) or {}).get("fast", True):
        return None
    bad = version_mismatches(fp)
    if bad:
        if algo.name not in _WARNED:
            _WARNED.add(algo.name)
            log.warning("%s: fast path off, running RAIL's own %s: %s", algo.name,
                        algo.estimator, "; ".join(bad))
        return None
    return fp
