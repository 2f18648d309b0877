"""Counting the objects that go through a function: the proof that a fast path did the work.

An equivalence test alone cannot tell a fast path from RAIL's own code (they give the same
numbers by design). ``Through`` wraps the Python entry points of the compiled (or
vectorised) code and of RAIL's per-object code it replaces, and counts the objects each
call handles; a test then asserts that every object went through the fast code and none
through RAIL's (and the reverse with ``fast: false``).

Only functions looked up at call time can be counted: module attributes called from Python
(a numba kernel called by another kernel is compiled into it) and class attributes.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable


def rows_of(i: int) -> Callable:
    """Objects of a call = ``len`` of its positional argument ``i``."""
    return lambda *a, **k: len(a[i])


def one(*a, **k) -> int:
    """One object per call (RAIL's per-object functions)."""
    return 1


class Through:
    """Counts per key of the objects passed to wrapped functions (``monkeypatch``: undone
    at the end of the test)."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch
        self.n: Counter = Counter()
        self._lock = threading.Lock()     # fast paths may call from threads

    def wrap(self, owner, name: str, key: str, rows: Callable = rows_of(0)) -> None:
        """Replace ``owner.name`` (module or class attribute) by a counting wrapper."""
        f = getattr(owner, name)

        def counted(*a, **k):
            with self._lock:
                self.n[key] += int(rows(*a, **k))
            return f(*a, **k)

        counted.__wrapped__ = f
        self.mp.setattr(owner, name, counted)

    def reset(self) -> None:
        self.n.clear()

    def __getitem__(self, key: str) -> int:
        return self.n[key]

    def __repr__(self) -> str:
        return f"Through({dict(self.n)})"
