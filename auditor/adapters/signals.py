"""SIGINT, SIGTERM and SIGHUP as an exception, and sections a signal cannot split.

``install`` makes the three signals raise ``Interrupted`` in the main thread, so a transfer
stops at its next chunk, streams are aborted and what the run made is removed on the way out.
The first signal raises; later ones are ignored, so that clean-up is never cut short. Inside
``deferred()`` (creating a volume and recording it, moving a file into place) a signal waits
until the section ends.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from auditor.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _State:
    depth = 0  # nesting of deferred() sections
    pending: int | None = None  # a signal that arrived inside one
    fired = False  # Interrupted was raised already


def _interrupted(signum: int) -> Interrupted:
    _State.fired = True
    return Interrupted(signum, signal.Signals(signum).name)


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _State.fired or _State.pending is not None:
        return
    if _State.depth:
        _State.pending = signum
        return
    raise _interrupted(signum)


def install() -> Callable[[], None]:
    """Install the handlers; return a function that puts the previous ones back."""
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _State.depth, _State.pending, _State.fired = 0, None, False

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


@contextmanager
def deferred() -> Iterator[None]:
    """A section a signal cannot interrupt: one arriving meanwhile is raised at its end."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise _interrupted(signum)
