"""Compiled rulesets in memory, one per environment, per serving process.

``get_ruleset(environment_key)`` answers from memory. A background thread
keeps the rulesets current:

- it waits for change notices (PostgreSQL ``LISTEN`` on
  ``flags.propagation.CHANNEL`` with its own psycopg connection, or Redis
  pub/sub when ``RULESET_REDIS_URL`` is set), at most
  ``RULESET_POLL_INTERVAL`` seconds at a time;
- after a notice or that timeout it runs one tiny query for every
  environment's ``ruleset_version`` and recompiles the rulesets that moved.

So a lost notice costs at most one poll interval, SQLite works by polling
alone, and an evaluation request runs no query in steady state. When the
database is unreachable the last rulesets keep serving, answers say they are
stale (no successful check for ``RULESET_STALE_AFTER`` seconds), and the
thread retries with backoff until the database is back.

Without the background thread (``RULESET_BACKGROUND`` off, as in the test
settings) the version check runs on the request path, at most once per poll
interval.

Every ruleset loaded from the database is also written to the last known
good state on local disk (``controlplane.lastgood``). A process that has no
ruleset of an environment in memory and cannot read the database (started
during an outage) serves the one on disk, every answer marked stale, instead
of refusing; the database's own ruleset replaces it once it answers again.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time

from controlplane import db, lastgood, procid
from controlplane.conf import setting
from controlplane.exceptions import DatabaseUnavailable, DomainError, NotFound
from flags import engine, notices

log = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0
_WAKE = 0.5  # longest wait before the thread looks at its stop event
_FREEZE_ABOVE = 50_000  # registry size from which a load freezes the heap
_PERSIST_DELAY = 0.5  # seconds a last known good write waits for more changes


class RulesetUnavailable(DatabaseUnavailable):
    """No ruleset in memory or on disk and the database cannot be read."""


def _record_name(environment_key: str) -> str:
    return f"ruleset-{environment_key}"


class RulesetStore:
    """Compiled rulesets of every environment this process has served."""

    def __init__(self, *, async_persist: bool = False) -> None:
        self.using = "default"
        # write last known good states on the writer thread even without the
        # background thread (which always does)
        self.async_persist = async_persist
        self._rulesets: dict[str, engine.Ruleset] = {}
        self._known: dict[
            str, tuple[int, int]
        ] = {}  # key -> (pk, version) from last check
        self._lock = threading.RLock()
        self._last_check = 0.0  # monotonic time of the last attempt
        self._last_ok = 0.0  # monotonic time of the last successful check
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._running_in = 0  # the pid whose background thread runs
        self._stop = threading.Event()
        self._wakeups = 0
        self._stale_after = 2.0
        self.reloads = 0
        # rulesets read back from disk, served only while the database fails
        self._last_good: dict[str, engine.Ruleset] = {}
        self.applied = 0  # changes applied to a ruleset without a reload
        # last known good writes waiting for the writer thread
        self._persist_lock = threading.Lock()
        self._persist_pending: dict[str, engine.Ruleset] = {}
        self._persist_wake = threading.Event()
        self._persist_thread: threading.Thread | None = None

    # -- request path ------------------------------------------------------

    def get_ruleset(self, environment_key: str) -> tuple[engine.Ruleset, bool]:
        """Return the environment's ruleset and whether it may be stale.

        Raises NotFound for an unknown environment and RulesetUnavailable
        when nothing is in memory or on disk and the database cannot be read.
        """
        now = time.monotonic()
        if self._background_alive():
            ruleset = self._rulesets.get(environment_key)
            if ruleset is not None:
                # the background thread refreshes _stale_after from settings
                stale = self._failures > 0 or now - self._last_ok > self._stale_after
                return ruleset, stale
        else:
            if setting("RULESET_BACKGROUND"):
                self.start()
            due = not self._last_check or now - self._last_check >= self._retry_delay()
            if due and not db.serving_failed_recently():
                self._check_quietly()
            ruleset = self._rulesets.get(environment_key)
            if ruleset is not None:
                return ruleset, self.is_stale()
        ruleset, from_disk = self._load_cold(environment_key)
        return ruleset, from_disk or self.is_stale()

    def is_stale(self) -> bool:
        """Return True when no version check succeeded recently."""
        return (
            self._failures > 0
            or self._last_ok == 0
            or (time.monotonic() - self._last_ok > setting("RULESET_STALE_AFTER"))
        )

    def _retry_delay(self) -> float:
        interval = setting("RULESET_POLL_INTERVAL")
        if not self._failures:
            return interval
        return min(interval * (2 ** min(self._failures, 8)), _MAX_BACKOFF)

    def _load_cold(self, environment_key: str) -> tuple[engine.Ruleset, bool]:
        """Return the ruleset from the database, else disk; and if from disk."""
        with self._lock:
            ruleset = self._rulesets.get(environment_key)
            if ruleset is not None:
                return ruleset, False
            fresh = self._last_ok > 0 and (
                time.monotonic() - self._last_ok < setting("RULESET_POLL_INTERVAL")
            )
            if fresh and environment_key not in self._known:
                # the last check listed every environment: absent is cached too
                raise NotFound(
                    f"environment {environment_key!r} not found", field="environment"
                )
            if db.serving_failed_recently() or (
                self._failures
                and time.monotonic() - self._last_check < self._retry_delay()
            ):
                # the database failed a moment ago: do not make this request
                # wait for it again (the retries have their own schedule)
                return self._from_disk(environment_key), True
            try:
                self.check_versions()
                if environment_key not in self._known:
                    raise NotFound(
                        f"environment {environment_key!r} not found",
                        field="environment",
                    )
                return self._reload(environment_key), False
            except DomainError:
                raise
            except Exception as exc:
                self._note_failure(exc)
                return self._from_disk(environment_key), True

    def _from_disk(self, environment_key: str) -> engine.Ruleset:
        """Return the last known good ruleset on disk, else RulesetUnavailable."""
        try:
            record = lastgood.read(_record_name(environment_key), using=self.using)
            ruleset = self._last_good.get(environment_key)
            if record is not None and (
                ruleset is None or ruleset.version != record.version
            ):
                ruleset = engine.compile_ruleset(record.payload)
                self._last_good[environment_key] = ruleset
                log.warning(
                    "database unavailable: serving environment %r from the last"
                    " known good ruleset on disk (version %s, saved %s)",
                    environment_key,
                    record.version,
                    record.saved_at,
                )
        except Exception as exc:  # an unreadable record is no record
            log.warning("cannot read the last known good ruleset: %s", exc)
            record = None
        if record is None:
            raise RulesetUnavailable(
                "the ruleset cannot be loaded: database unavailable"
            )
        return self._last_good[environment_key]

    # -- refreshing --------------------------------------------------------

    def check_versions(self) -> list[str]:
        """Read every environment's version (one query); reload what moved.

        Return the keys of the environments reloaded. Raises on database
        errors (the callers decide between retry and stale).
        """
        from flags.models import Environment

        self._last_check = time.monotonic()
        rows = Environment.objects.using(self.using).values_list(
            "key", "pk", "ruleset_version", "full_reload_version"
        )
        known, full = {}, {}
        for key, pk, version, full_version in rows:
            known[key] = (pk, version)
            full[key] = full_version
        reloaded = []
        with self._lock:
            self._known = known
            for key in list(self._rulesets):
                if key not in known:
                    self._rulesets.pop(key, None)
                    continue
                current = self._rulesets[key].version
                if current == known[key][1]:
                    continue
                if full[key] <= current < known[key][1]:
                    self._apply_flag_changes(key, since=current)
                else:  # registry or segments changed, or the version went back
                    self._reload(key)
                reloaded.append(key)
        self._last_ok = time.monotonic()
        self._failures = 0
        db.serving_read_succeeded()
        self._stale_after = setting("RULESET_STALE_AFTER")
        return reloaded

    def _check_quietly(self) -> None:
        try:
            self.check_versions()
        except Exception as exc:
            self._note_failure(exc)

    def _note_failure(self, exc: Exception) -> None:
        self._failures += 1
        db.serving_read_failed()
        self._last_check = time.monotonic()
        if self._failures in (1, 10) or self._failures % 100 == 0:
            log.warning(
                "ruleset version check failed (%s in a row): %s", self._failures, exc
            )
        notices.close_connection(self.using)

    def _reload(self, environment_key: str) -> engine.Ruleset:
        from flags import mappers, metrics
        from flags.models import Environment

        pk = self._known[environment_key][0]
        environment = Environment(pk=pk, key=environment_key)
        ruleset = engine.compile_ruleset(mappers.ruleset_data(environment))
        self._rulesets[environment_key] = ruleset
        if len(ruleset.merchants) > _FREEZE_ABOVE:
            # A large ruleset is hundreds of thousands of long-lived objects:
            # leave them out of the cyclic collector's full passes, which
            # otherwise walk all of them again and again (tens of ms each).
            # Refcounting still frees them once the ruleset is replaced.
            gc.collect()
            gc.freeze()
        self._last_good.pop(environment_key, None)
        self.reloads += 1
        metrics.ruleset_loaded(environment_key)
        # a process's first state of an environment goes to disk at once
        # (nothing there yet to serve from in an outage); later ones may wait
        self._persist(
            ruleset,
            now=not lastgood.exists(_record_name(environment_key), using=self.using),
        )
        return ruleset

    def _apply_flag_changes(self, environment_key: str, *, since: int) -> None:
        """Recompile only the flags changed after version ``since``.

        Each change confined to flags stamps the flag states it touched with
        the new version (flags.services._common.bump_rulesets); the rest of
        the ruleset is kept as it is (flags.engine_delta).
        """
        from django.utils import timezone

        from flags import engine_delta, mappers, metrics
        from flags.models import Environment, FlagState

        pk, version = self._known[environment_key]
        changed_ids = dict(
            FlagState.objects.using(self.using)
            .filter(environment_id=pk, changed_in_version__gt=since)
            .values_list("flag_id", "flag__key")
        )
        now = timezone.now()
        entries = mappers.flags_data(
            Environment(pk=pk, key=environment_key), now=now, flag_ids=changed_ids
        )
        changed: dict[str, dict | None] = dict.fromkeys(changed_ids.values())
        changed.update((entry["key"], entry) for entry in entries)
        ruleset = engine_delta.update_ruleset(
            self._rulesets[environment_key],
            version=version,
            changed=changed,
            generated_at=now.isoformat(),
        )
        self._rulesets[environment_key] = ruleset
        self.applied += 1
        metrics.ruleset_loaded(environment_key)
        self._persist(ruleset)

    def _persist(self, ruleset: engine.Ruleset, *, now: bool = False) -> None:
        """Write the ruleset as the environment's last known good state.

        With the background thread running, the write happens on a writer
        thread of its own, a moment later, and only for the newest version
        of each environment: a change never waits for a large ruleset to
        reach the disk. Without it (tests, one-off commands), or with
        ``now``, it is written here.
        """
        if ruleset.data is None:
            return
        if not now and (self.async_persist or self._background_alive()):
            with self._persist_lock:
                self._persist_pending[ruleset.environment] = ruleset
                self._persist_wake.set()
                writer = self._persist_thread
                if writer is None or not writer.is_alive():
                    self._persist_thread = threading.Thread(
                        target=self._persist_run, name="ruleset-lastgood", daemon=True
                    )
                    self._persist_thread.start()
            return
        self._write_last_good(ruleset)

    def _persist_run(self) -> None:
        while not self._stop.is_set() or self._persist_wake.is_set():
            if not self._persist_wake.wait(_WAKE):
                continue
            # let a burst of changes settle: only the last one is written
            self._stop.wait(_PERSIST_DELAY)
            with self._persist_lock:
                self._persist_wake.clear()
                pending, self._persist_pending = self._persist_pending, {}
            for ruleset in pending.values():
                self._write_last_good(ruleset)
        self.flush_last_good()

    def flush_last_good(self) -> None:
        """Write the rulesets still waiting for the writer thread (at stop)."""
        with self._persist_lock:
            pending, self._persist_pending = self._persist_pending, {}
        for ruleset in pending.values():
            self._write_last_good(ruleset)

    def _write_last_good(self, ruleset: engine.Ruleset) -> None:
        from flags import ruleset_json

        try:
            # the JSON the ruleset endpoint serves, encoded once per version
            lastgood.write_encoded(
                _record_name(ruleset.environment),
                ruleset_json.serialized(ruleset),
                version=ruleset.version,
                using=self.using,
                newer_only=True,
            )
        except Exception as exc:  # a full disk must not stop the serving
            log.warning("cannot write the last known good ruleset: %s", exc)

    def clear(self) -> None:
        """Forget every ruleset (tests)."""
        with self._lock:
            self._rulesets.clear()
            self._last_good.clear()
            self._known.clear()
            self._last_check = self._last_ok = 0.0
            self._failures = 0
        db.serving_read_succeeded()

    # -- background thread -------------------------------------------------

    def _background_alive(self) -> bool:
        # one comparison: the thread clears it when it ends, and a forked
        # child has another pid (procid.current) than the one that started it
        return self._running_in == procid.current

    def start(self) -> None:
        """Start the listener/poller thread of this process (idempotent)."""
        if self._background_alive():
            return
        with self._lock:
            if self._background_alive():
                return
            self._running_in = procid.current
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="ruleset-store", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout)
        self._thread = None
        self._running_in = 0
        writer = self._persist_thread
        if writer is not None:
            writer.join(timeout=timeout)
        self._persist_thread = None
        self.flush_last_good()

    def _run(self) -> None:
        try:
            self._follow()
        finally:
            if self._running_in == os.getpid():
                self._running_in = 0

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_quietly()
                if self._failures:
                    self._stop.wait(self._retry_delay())
                    continue
                notices.listen(self.using, self._stop, self._on_notice)
            except Exception as exc:
                self._note_failure(exc)
                self._stop.wait(self._retry_delay())
        notices.close_connection(self.using)

    def _on_notice(self, noticed: bool) -> None:
        self._wakeups += noticed
        self.check_versions()


_store = RulesetStore()


def store() -> RulesetStore:
    """Return this process's store."""
    return _store


def get_ruleset(environment_key: str) -> tuple[engine.Ruleset, bool]:
    """Return ``(ruleset, is_stale)`` of an environment from memory."""
    return _store.get_ruleset(environment_key)


def serialized(ruleset: engine.Ruleset) -> bytes:
    """Return the JSON bytes of ``ruleset.data``, cached per version.

    The same bytes as ``json.dumps(ruleset.data, separators=(",", ":"),
    ensure_ascii=False).encode()``; a new version re-encodes only the flags
    that changed (flags.ruleset_json).
    """
    from flags import ruleset_json

    return ruleset_json.serialized(ruleset)
