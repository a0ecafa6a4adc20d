"""Work in daemon threads: a run that gives up on a stalled host or image never waits for it.

An executor's threads are joined when the interpreter exits, so one call that never returns
(a frozen host, qemu-img on a hung NFS mount) would hold the process forever; these are not.
Waiting on them stays interruptible: a signal reaches the main thread at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``fn`` of each item, in order, ``workers`` at a time; the first exception is raised
    (the other items not yet started are left undone)."""
    results: list[R | None] = [None] * len(items)
    todo = iter(enumerate(items))
    lock = threading.Lock()
    failed: list[BaseException] = []

    def work() -> None:
        while not failed:
            with lock:
                nxt = next(todo, None)
            if nxt is None:
                return
            try:
                results[nxt[0]] = fn(nxt[1])
            except BaseException as exc:  # raised in the caller's thread below
                failed.append(exc)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]
    return results  # type: ignore[return-value]  # every slot was filled
