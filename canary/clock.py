"""The canary's clock: the controller, the canary services and the outcomes
provider read the time here, and only here.

One function, ``now()``, so a test or a simulator can swap the source of
time (``swapped(FakeClock(...))``, or ``monkeypatch`` of ``now``) and move
it instead of sleeping. The swap is process-wide: it is meant for a test or
a single-threaded simulator, never for a serving process.

Timeouts of real network and database calls (``time.monotonic``) and the
dev loop's sleeping stay on the machine's clock: they bound real waits, not
phase time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.utils import timezone

Source = Callable[[], dt.datetime]

# None: the real time (``django.utils.timezone.now``).
_source: Source | None = None


def now() -> dt.datetime:
    """Return the current time (aware, UTC) from the swapped-in source, if
    any, else the real time."""
    source = _source
    return timezone.now() if source is None else source()


@contextmanager
def swapped(source: Source) -> Iterator[Source]:
    """Read the time from ``source`` inside the block, then restore the
    previous source (blocks nest)."""
    global _source
    previous, _source = _source, source
    try:
        yield source
    finally:
        _source = previous


class FakeClock:
    """A clock that moves only when told to: call it for the time.

    Starts at ``start`` (aware; default the real time now) and never goes
    backwards: ``advance`` refuses a negative step and ``set`` an earlier
    time, because the controller's leases and soak times assume time only
    moves forward.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = timezone.now() if start is None else start
        _require_aware(start)
        self._now = start

    def __call__(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float) -> dt.datetime:
        """Move the time forward by ``seconds`` (>= 0); return the new time."""
        if not seconds >= 0:  # also refuses NaN
            raise ValueError(f"a clock cannot go back ({seconds!r} s)")
        self._now += dt.timedelta(seconds=seconds)
        return self._now

    def set(self, when: dt.datetime) -> dt.datetime:
        """Move the time forward to ``when`` (aware, not earlier); return it."""
        _require_aware(when)
        if when < self._now:
            raise ValueError(f"a clock cannot go back ({when} < {self._now})")
        self._now = when
        return when


def _require_aware(when: dt.datetime) -> None:
    if not isinstance(when, dt.datetime) or timezone.is_naive(when):
        raise ValueError(f"an aware datetime is required, got {when!r}")
