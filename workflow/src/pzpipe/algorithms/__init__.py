"""Registry of photo-z estimators: one module per RAIL estimator.

Each module (``bpz.py``, ``fzboost.py``, ``knn.py``, ``tpz.py``, ``dnf.py``, ``gpz.py``,
``cmnn.py``, ``lephare.py``) declares an ``ALGORITHM`` (``_base.Algorithm``) holding
everything specific to that estimator: its RAIL classes and package, the RAIL parameters
the pipeline sets, its RAIL traps and their work-arounds (as hooks), its extra output
columns, and its fast path (``_base.FastPath``) with the package versions the fast path's
equivalence tests ran on. The shared runner (``runner.Runner``) and helpers (``_base``)
name no estimator.

Adding an estimator: write ``<name>.py`` with an ``ALGORITHM``, add the module to
``_MODULES`` below, give it a block in ``config/config.yaml`` and the schema. Plugging in a
fast path: one ``fast=FastPath(...)`` line in the estimator's module.

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

__all__ = ["Algorithm", "DataDir", "FastPath", "REGISTRY", "Runner", "chunk_seed",
           "common_params", "data_dir_path", "default_names", "distributions", "fast_path_for",
           "get", "guarantees", "load_ref", "packages", "patched", "seed_everything", "seeded_default_rng",
           "stage_params", "version_mismatches", "with_data_dir"]


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
