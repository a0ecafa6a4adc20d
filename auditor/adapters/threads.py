"""Work in daemon threads: a run that gives up on a stalled host or image never waits for it.

An executor's threads are joined when the interpreter exits, so one call that never returns
(a frozen host, qemu-img on a hung NFS mount) would hold the process forever; these are not.
Waiting on them stays interruptible: a signal reaches the main thread at once.
"""

from __future__ import annotations

import queue
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


def within(fn: Callable[[], R], seconds: float, late: Callable[[R], None]) -> R | None:
    """``fn()`` in a daemon thread, waited for at most ``seconds`` (a signal stops the
    wait); its exception is raised here. None when it has not returned by then: should it
    return later, ``late`` gets what it returned (e.g. to close a connection)."""
    done: queue.SimpleQueue[tuple[R | None, BaseException | None]] = queue.SimpleQueue()
    lock = threading.Lock()
    given_up = False

    def work() -> None:
        try:
            found: tuple[R | None, BaseException | None] = (fn(), None)
        except BaseException as exc:  # raised in the caller's thread below
            found = (None, exc)
        with lock:
            if not given_up:
                done.put(found)
                return
        if found[1] is None:
            late(found[0])  # type: ignore[arg-type]  # fn returned it

    threading.Thread(target=work, daemon=True).start()
    try:
        value, error = done.get(timeout=seconds)
    except queue.Empty:
        with lock:
            if done.empty():  # nothing arrived meanwhile: whatever comes later is late
                given_up = True
                return None
        value, error = done.get_nowait()
    if error is not None:
        raise error
    return value
