"""The one numba on-disk cache setting of pzpipe's compiled kernels.

``CACHE`` is passed as ``@njit(cache=CACHE)`` by every kernel (pdfstore, pointest and the
fast estimator paths in pzpipe.algorithms). numba raises at import if caching was
requested and no cache location works (read-only install, no ``$HOME`` on a compute
node), so caching is requested only when it can work. This module does not import numba
(pzpipe.release.read uses none).
"""
from __future__ import annotations

import os

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # pzpipe/


def numba_cache_ok(source_dir: str = _PKG) -> bool:
    """True when numba can cache kernels compiled from the files of ``source_dir`` (in
    its ``__pycache__``, when writable) or when ``NUMBA_CACHE_DIR`` is set."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True
    d = os.path.join(source_dir, "__pycache__")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK)


#: kernels live in pzpipe/release/ and pzpipe/algorithms/: cache only when both can
CACHE = numba_cache_ok(os.path.join(_PKG, "release")) and numba_cache_ok(os.path.join(_PKG, "algorithms"))
