"""Run many shim calls concurrently without paying for it when shims answer at once.

Threads that wait on a socket release the GIL, so a hung shim only costs a thread; but many
threads racing for the GIL slow down shims that answer in a fraction of a millisecond. So at
most a few calls run "fast" at once, and a call that has run longer than `slow_after` stops
counting (it is waiting on a slow or hung shim): K hung shims cost about one timeout together,
and N live ones are handled almost as fast as one after another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

FAST_SLOTS = 4
MAX_WORKERS = 64
SLOW_AFTER = 0.02


def run_all(
    fn: Callable[[T], None],
    items: Iterable[T],
    *,
    fast_slots: int = FAST_SLOTS,
    max_workers: int = MAX_WORKERS,
    slow_after: float = SLOW_AFTER,
) -> None:
    """Call `fn(item)` for every item; exceptions propagate once all calls have ended."""
    pending = iter(items)
    exhausted = False
    running: dict[Future[None], float] = {}
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        while True:
            now = time.monotonic()
            fast = sum(1 for started in running.values() if now - started < slow_after)
            while not exhausted and fast < fast_slots and len(running) < max_workers:
                try:
                    item = next(pending)
                except StopIteration:
                    exhausted = True
                    break
                running[pool.submit(fn, item)] = time.monotonic()
                fast += 1
            if exhausted and not running:
                break
            done, _ = wait(running, timeout=slow_after / 2, return_when=FIRST_COMPLETED)
            for future in done:
                del running[future]
                if (err := future.exception()) is not None:
                    errors.append(err)
    if errors:
        raise errors[0]
