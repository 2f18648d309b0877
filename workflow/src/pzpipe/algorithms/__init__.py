"""Registry of photo-z estimators: one module per RAIL estimator.

Each module (``bpz.py``, ``fzboost.py``, ``knn.py``, ``tpz.py``, ``dnf.py``, ``gpz.py``,
``cmnn.py``, ``lephare.py``) declares an ``ALGORITHM`` (``_base.Algorithm``) holding
everything specific to that estimator: its RAIL classes and package, the RAIL parameters
the pipeline sets, its RAIL traps and their work-arounds (as hooks), its extra output
columns, and its fast path (``_base.FastPath``) with the package versions the fast path's
equivalence tests ran on. The shared runner (``runner.Runner``) and helpers (``_base``)
name no estimator.

Adding an estimator: write ``<name>.py`` with an ``ALGORITHM`` (its RAIL classes, its own
settings in ``settings=``, whether the default run enables it) and add the module to
``_MODULES`` below; nothing else names it: the config schema's ``algorithms.<name>`` block,
the default config, the tests' lists and the planner come from this registry. An estimator
outside this package: list its module in the config's ``algorithm_modules`` (importable
dotted names; ``register`` is called for each when the config is validated; the
throughput file's ``unmeasured`` entry sizes its jobs until it has its own).
Plugging in a fast path: one ``fast=FastPath(...)`` line in the estimator's module.

Importing this package imports no RAIL code (the rules import it at parse time).
"""

from __future__ import annotations

from . import bpz, cmnn, dnf, fzboost, gpz, knn, lephare, tpz
from ._base import (Algorithm, DataDir, FastPath, chunk_seed, common_params, data_dir_path,
                    fast_path_for, load_ref, patched, seed_everything, seeded_default_rng,
                    stage_params, version_mismatches)
from .runner import Runner

_MODULES = (bpz, fzboost, knn, tpz, dnf, gpz, cmnn, lephare)

REGISTRY: dict[str, Algorithm] = {m.ALGORITHM.name: m.ALGORITHM for m in _MODULES}
BUILTIN: tuple[str, ...] = tuple(REGISTRY)

__all__ = ["Algorithm", "DataDir", "FastPath", "REGISTRY", "Runner", "chunk_seed",
           "common_params", "data_dir_path", "default_names", "distributions", "fast_path_for",
           "get", "guarantees", "load_ref", "packages", "patched", "seed_everything", "seeded_default_rng",
           "stage_params", "version_mismatches", "with_data_dir", "register", "load_modules"]


def register(algo: Algorithm) -> Algorithm:
    """Add an estimator declared outside this package (the config's ``algorithm_modules``).
    Registering the same declaration again is a no-op; another one under a taken name is
    an error."""
    if not isinstance(algo, Algorithm):
        raise TypeError(f"register() takes an Algorithm, not {type(algo).__name__}")
    have = REGISTRY.get(algo.name)
    if have is not None and have is not algo:
        raise ValueError(f"an estimator named '{algo.name}' is already registered "
                         f"({have.module}.{have.estimator})")
    REGISTRY[algo.name] = algo
    return algo


def load_modules(names) -> list[str]:
    """Import each dotted module name and register its ``ALGORITHM``; the names registered.
    Raises ImportError / AttributeError naming the module."""
    import importlib

    out = []
    for mod_name in names:
        mod = importlib.import_module(mod_name)
        algo = getattr(mod, "ALGORITHM", None)
        if algo is None:
            raise AttributeError(f"module '{mod_name}' declares no ALGORITHM "
                                 f"(pzpipe.algorithms.Algorithm)")
        out.append(register(algo).name)
    return out


def get(name: str) -> Algorithm:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown algorithm '{name}'; known: {sorted(REGISTRY)}") from None


def default_names() -> tuple[str, ...]:
    """Estimators of the default run (those enabled by default), in registry order."""
    return tuple(n for n, a in REGISTRY.items() if a.enabled_by_default)


def with_data_dir(names) -> list[str]:
    """The estimators among ``names`` that need a prepared data directory."""
    return [n for n in names if n in REGISTRY and REGISTRY[n].data_dir is not None]


def distributions() -> tuple[str, ...]:
    """PyPI packages of every registered estimator (provenance records their versions)."""
    return tuple(dict.fromkeys(a.distribution for a in REGISTRY.values()))


def packages() -> tuple[str, ...]:
    """Every estimator's RAIL package and every package a fast path was verified on."""
    out = list(distributions())
    for a in REGISTRY.values():
        if a.fast is not None:
            out.extend(a.fast.verified)
    return tuple(dict.fromkeys(out))


def guarantees() -> dict[str, str]:
    """estimator -> what its fast path guarantees (docs; ``pzpipe.planning.bench``)."""
    return {n: a.fast.guarantee for n, a in REGISTRY.items() if a.fast is not None}
