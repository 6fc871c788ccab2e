"""A least-recently-used map shared by threads: the pipeline's caches of the notes' tokens and features.

A function over a caller's ``OrderedDict`` and lock rather than a class: a shallow copy of a pipeline (the bench's
clones) gets caches of its own by assigning fresh ones. Not ``functools.lru_cache``: it keys by the arguments, so it
would keep the notes' text itself; these caches are keyed by a hash of it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

V = TypeVar("V")


def cached(cache: OrderedDict, lock: threading.Lock, key: Hashable, compute: Callable[[], V], maxsize: int) -> V:
    """``cache[key]`` (now the most recent entry), else ``compute()`` stored under ``key``, the oldest entries dropped
    beyond ``maxsize``. ``compute`` runs outside ``lock``: two threads missing the same key both compute it, each
    returns its own result, and the later one is kept."""
    with lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = compute()
    with lock:
        cache[key] = value
        while len(cache) > maxsize:
            cache.popitem(last=False)
    return value
