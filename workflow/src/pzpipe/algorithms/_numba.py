"""numba helpers shared by pzpipe's fast estimator paths.

* ``CACHE``: whether numba may cache compiled kernels on disk (pzpipe.core.numba_cache, the
  one setting of every pzpipe kernel).
* ``pairwise_sum(a, start, n)``: the sum of a contiguous float64 slice in numpy's own
  order (``np.add.reduce``: sequential below 8 elements, 8 interleaved accumulators up
  to 128, recursive halving above), so that compiled code reproduces numpy's sums, means
  and standard deviations bit for bit.
"""
from __future__ import annotations

from numba import njit

from pzpipe.core.numba_cache import CACHE, numba_cache_ok  # noqa: F401  (the one cache setting)

_CACHE = CACHE


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _pw_block(a, start, n):
    # numpy's pairwise_sum for n <= 128 (contiguous float64)
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[start + i]
        return res
    r0 = a[start]
    r1 = a[start + 1]
    r2 = a[start + 2]
    r3 = a[start + 3]
    r4 = a[start + 4]
    r5 = a[start + 5]
    r6 = a[start + 6]
    r7 = a[start + 7]
    i = 8
    nn = n - (n % 8)
    while i < nn:
        r0 += a[start + i]
        r1 += a[start + i + 1]
        r2 += a[start + i + 2]
        r3 += a[start + i + 3]
        r4 += a[start + i + 4]
        r5 += a[start + i + 5]
        r6 += a[start + i + 6]
        r7 += a[start + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


def _make_pairwise_level(lower):
    @njit(cache=_CACHE, nogil=True, error_model="numpy")
    def level(a, start, n):
        if n <= 128:
            return _pw_block(a, start, n)
        n2 = n // 2
        n2 -= n2 % 8
        return lower(a, start, n2) + lower(a, start + n2, n - n2)

    return level


# numpy's recursion (split n in two, the first part a multiple of 8) unrolled
# into levels, because numba's on-disk cache does not handle recursive
# functions well. Level k is exact for n <= N_k, N_0 = 128,
# N_k = 2 * (N_{k-1} - 8): 240, 464, 912, 1808, 3600, 7184.
_pw_levels = [_pw_block]
for _ in range(6):
    _pw_levels.append(_make_pairwise_level(_pw_levels[-1]))
_pw_top = _pw_levels[-1]
_PW_MAX = 7184


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _pairwise_sum(a, start, n):
    """Sum a[start:start+n] in numpy's order (np.add.reduce, contiguous 1-d).

    Exact for n <= 7184 (any realistic z grid or template set); longer sums
    are split in blocks of 7184 and added sequentially (numpy would keep
    halving: the result may differ in the last bit)."""
    if n <= _PW_MAX:
        return _pw_top(a, start, n)
    s = 0.0
    for i in range(start, start + n, _PW_MAX):
        s += _pw_top(a, i, min(_PW_MAX, start + n - i))
    return s


pairwise_sum = _pairwise_sum
PAIRWISE_EXACT_MAX = _PW_MAX
