"""When each flag was last evaluated, per environment: counted in memory.

The evaluation answers (``flags.hotpath.answers``, shared by the hot path,
the Django views and relays) call ``record`` once per request: per answer
one dict lookup and one C-level counter step, no clock read, no query
(``bench/usage_record.py`` measures it). ``flush`` writes what was counted
since the last flush to ``FlagUsage`` in one upsert statement, which adds
the counts and keeps the later time; the time written is the flush's own,
so ``last_evaluated_at`` is exact to within ``FLUSH_INTERVAL``. Each serving
process flushes its own counts from a daemon thread (started with the first
count when ``RULESET_BACKGROUND`` is on) and at exit; a relay, which has no
database, sends them upstream instead (``set_sink``).

Counts are cumulative per process, never reset: ``flush`` writes the
difference to what it wrote before, so an evaluation racing with a flush is
written by the next one, and none is lost between threads. Only the
ruleset's own flags are counted (callers choose the keys they send), so
memory is bounded by flags x environments.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Container, Iterable
from typing import Any

log = logging.getLogger("flags.usage")

FLUSH_INTERVAL = 60.0  # seconds

Sink = Callable[[dict[tuple[str, str], int], Any], None]

# environment key -> flag key -> counter of this process's evaluations
_counts: dict[str, dict[str, itertools.count]] = {}
# flush's own state, under _lock: what it has written, how often it read
_flushed: dict[tuple[str, str], int] = {}
_reads: dict[tuple[str, str], int] = {}
_lock = threading.Lock()
_flusher: threading.Thread | None = None
_sink: Sink | None = None  # None: the database (flags.services.usage)


def record(environment: str, answers: Iterable[Any], known: Container[str]) -> None:
    """Count one request's answers of the flags in ``known`` (one call per request)."""
    try:
        counts = _counts[environment]
    except KeyError:
        counts = _counts.setdefault(environment, {})
        _ensure_flusher()
    for answer in answers:
        # next() of an itertools.count: one C call, no int object kept, and
        # atomic under the GIL (a Python "+= 1" is neither). A flag is
        # checked against the ruleset only the first time it is seen.
        try:
            next(counts[answer.flag_key])
        except KeyError:
            if answer.flag_key in known:
                counts[answer.flag_key] = itertools.count(1)


def pending() -> dict[tuple[str, str], int]:
    """Return what the next flush would write: (environment, flag) -> count."""
    with _lock:
        return _pending()


def _pending() -> dict[tuple[str, str], int]:
    # A counter is read with next(), which counts one more: the reads so far
    # are subtracted (a counter holds evaluations + reads).
    deltas = {}
    for environment, counts in list(_counts.items()):
        for flag, counter in list(counts.items()):
            key = (environment, flag)
            reads = _reads.get(key, 0)
            total = next(counter) - reads
            _reads[key] = reads + 1
            delta = total - _flushed.get(key, 0)
            if delta > 0:
                deltas[key] = delta
    return deltas


def flush(*, now: Any = None) -> int:
    """Write the counts since the last flush; return the rows upserted.

    One statement whatever the number of flags; a flag or environment that
    no longer exists is skipped. On a database error nothing is marked
    written, so the next flush tries again.
    """
    from django.utils import timezone

    with _lock:
        deltas = _pending()
        if not deltas:
            return 0
        (_sink or _database)(deltas, now or timezone.now())
        for key, delta in deltas.items():
            _flushed[key] = _flushed.get(key, 0) + delta
    return len(deltas)


def set_sink(sink: Sink | None) -> None:
    """Send flushed counts to ``sink(counts, at)`` instead of the database.

    A relay has no database: it forwards its counts upstream
    (``flags.relay.usage``). ``None`` puts the database back. A sink that
    raises keeps the counts for the next flush.
    """
    global _sink
    _sink = sink


def _database(counts: dict[tuple[str, str], int], at: Any) -> None:
    from flags.services.usage import flag_usage_upsert

    flag_usage_upsert(counts=counts, at=at)


def reset() -> None:
    """Forget every count (tests; a forked process starts from zero too)."""
    with _lock:
        _counts.clear()
        _flushed.clear()
        _reads.clear()


def _run_flusher() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        try:
            flush()
        except Exception as exc:  # counting goes on; the next flush retries
            log.warning("flag usage flush failed: %s", exc)
        finally:
            if _sink is None:
                from django.db import connection

                connection.close()


def _ensure_flusher() -> None:
    global _flusher
    from controlplane.conf import setting

    if not setting("RULESET_BACKGROUND"):
        return  # tests and one-off commands: flush() is called explicitly
    with _lock:
        if _flusher is not None and _flusher.is_alive():
            return
        _flusher = threading.Thread(
            target=_run_flusher, name="flag-usage-flush", daemon=True
        )
        _flusher.start()


def _after_fork() -> None:
    # A forked worker counts its own evaluations from zero.
    global _lock, _flusher
    _lock = threading.Lock()
    _flusher = None
    _counts.clear()
    _flushed.clear()
    _reads.clear()


def _flush_at_exit() -> None:
    if _flusher is None:
        return
    try:
        flush()
    except Exception as exc:
        log.warning("flag usage flush at exit failed: %s", exc)


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_flush_at_exit)
