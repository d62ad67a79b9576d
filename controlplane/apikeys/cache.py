"""Resolve raw API keys from memory.

A verified key is cached by the SHA-256 of the raw key. A background thread
(``start``) re-reads every cached key in one query every
``APIKEY_REVALIDATE_INTERVAL`` seconds, so a warm lookup runs no query and a
revocation is honoured within that interval. Without the thread, an entry
older than ``APIKEY_CACHE_TTL`` is re-checked on the request path. Unknown
keys are cached as absent for ``APIKEY_NEGATIVE_TTL`` seconds. When the
database is unreachable, known keys keep working (the last verified state).

Each revalidation reads every active key (still one query) and writes the
active server keys, as their SHA-256 hashes only, to the last known good
state on disk (``controlplane.lastgood``). A process started while the
database is unreachable accepts the keys of that record; a key it cannot
verify at all then gets ``ApiKeysUnavailable`` (503), never a 401 that would
tell a valid caller its key is wrong.

``last_used_at`` is written at most once per ``APIKEY_TOUCH_INTERVAL`` per
key, by the background thread, never per request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from controlplane import db, lastgood, procid
from controlplane.audit.actors import Actor
from controlplane.conf import setting
from controlplane.exceptions import DatabaseUnavailable

log = logging.getLogger(__name__)

_MAX_NEGATIVE = 10_000
_REWRITE_AFTER = 60.0  # an unchanged key set is rewritten this often
KEYS_RECORD = "apikeys"


class ApiKeysUnavailable(DatabaseUnavailable):
    """A key this process cannot verify while the database is unreachable."""


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What a request needs to know about a verified key (no secret)."""

    pk: int
    name: str
    scope: str
    environment_id: int | None
    environment_key: str | None
    user_id: int | None
    prefix: str
    is_revoked: bool = False

    @property
    def is_server(self) -> bool:
        return self.scope == "server"

    @property
    def is_management(self) -> bool:
        return self.scope == "management"

    def as_actor(self) -> Actor:
        return Actor(type="api_key", id=str(self.pk), name=self.name)


class KeyCache:
    """Process-wide cache of verified keys; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # digest -> (ApiKeyInfo | None, verified_at monotonic)
        self._entries: dict[str, tuple[ApiKeyInfo | None, float]] = {}
        # raw key -> active key, while the background thread revalidates:
        # a warm request skips the hash. Emptied by every revalidation (so a
        # revocation is honoured within the interval, as before), by
        # ``clear`` and in a forked child; unknown keys never enter it.
        self._fast: dict[str, ApiKeyInfo] = {}
        self._used: set[int] = set()  # pks used since the last flush
        self._touched: dict[int, float] = {}  # pk -> wall time last written
        self._thread: threading.Thread | None = None
        self._running_in = 0  # the pid whose background thread runs
        self._stop = threading.Event()
        self._persisted: tuple[str, float] = ("", 0.0)  # version, monotonic time

    # -- request path ------------------------------------------------------

    def resolve(self, raw: str) -> ApiKeyInfo | None:
        """Return the active key for ``raw``, or None (unknown or revoked).

        Raises ApiKeysUnavailable when the key is neither in memory nor in
        the last known good state and the database cannot be read.
        """
        info = self._fast.get(raw)
        if info is not None and self._running_in == procid.current:
            self._used.add(info.pk)
            return info
        if not raw or len(raw) > 200:
            return None
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
        entry = self._entries.get(digest)
        now = time.monotonic()
        if entry is not None:
            info, verified_at = entry
            if not self._background_alive():
                ttl = (
                    setting("APIKEY_CACHE_TTL")
                    if info is not None
                    else setting("APIKEY_NEGATIVE_TTL")
                )
                if now - verified_at > ttl:
                    info = self._load_one(digest, fallback=entry)
        else:
            self._ensure_started()
            info = self._load_one(digest, fallback=None)
        if info is None or info.is_revoked:
            return None
        self._used.add(info.pk)
        if self._background_alive():
            self._fast[raw] = info
        return info

    def _load_one(
        self, digest: str, fallback: tuple[ApiKeyInfo | None, float] | None
    ) -> ApiKeyInfo | None:
        if db.serving_failed_recently():
            return self._unverified(digest, fallback)
        try:
            found = _query([digest])
        except Exception as exc:  # database down: keep the last verified state
            db.serving_read_failed()
            log.warning("API key check failed, using cached state: %s", exc)
            return self._unverified(digest, fallback)
        db.serving_read_succeeded()
        info = found.get(digest)
        with self._lock:
            if info is None and len(self._entries) >= _MAX_NEGATIVE:
                self._entries = {
                    k: v for k, v in self._entries.items() if v[0] is not None
                }
            self._entries[digest] = (info, time.monotonic())
        return info

    def _unverified(
        self, digest: str, fallback: tuple[ApiKeyInfo | None, float] | None
    ) -> ApiKeyInfo | None:
        """Answer for a key while the database cannot be read."""
        if fallback is not None:
            return fallback[0]
        info = self._from_disk(digest)
        if info is None:
            raise ApiKeysUnavailable(
                "the API key cannot be checked now: the database is unavailable"
            )
        with self._lock:
            self._entries[digest] = (info, time.monotonic())
        return info

    def _from_disk(self, digest: str) -> ApiKeyInfo | None:
        try:
            record = lastgood.read(KEYS_RECORD)
        except Exception as exc:  # an unreadable record is no record
            log.warning("cannot read the last known good API keys: %s", exc)
            return None
        if record is None:
            return None
        row = record.payload.get("keys", {}).get(digest)
        if row is None:
            return None
        pk, name, scope, environment_id, environment_key, user_id, prefix = row
        return ApiKeyInfo(
            pk=pk,
            name=name,
            scope=scope,
            environment_id=environment_id,
            environment_key=environment_key,
            user_id=user_id,
            prefix=prefix,
        )

    # -- background --------------------------------------------------------

    def revalidate(self) -> None:
        """Re-read every active key in one query; update the cache and disk.

        Drop expired absent entries, and write the active server keys to the
        last known good state when they changed (or every minute).
        """
        with self._lock:
            digests = list(self._entries)
        found = _query_active()
        db.serving_read_succeeded()
        now = time.monotonic()
        negative_ttl = setting("APIKEY_NEGATIVE_TTL")
        with self._lock:
            for digest in digests:
                info = found.get(digest)
                old = self._entries.get(digest)
                if info is None and old is not None and old[0] is None:
                    if now - old[1] > negative_ttl:
                        self._entries.pop(digest, None)
                    continue
                self._entries[digest] = (info, now)
            self._fast = {}
        # after the cache: a revocation is honoured before the disk write
        self.persist(found)

    def flush_last_used(self) -> int:
        """Write ``last_used_at`` of the keys used since the last flush.

        At most once per ``APIKEY_TOUCH_INTERVAL`` per key; the time written
        is the flush's, within one revalidation interval of the last use.
        Return how many keys were written.
        """
        if not self._used:
            return 0
        used, self._used = self._used, set()
        wall = time.time()
        interval = setting("APIKEY_TOUCH_INTERVAL")
        pending = {
            pk: wall
            for pk in used
            if pk not in self._touched or wall - self._touched[pk] >= interval
        }
        if not pending:
            return 0
        import datetime as dt

        from controlplane.apikeys.services import apikeys_touch

        apikeys_touch(
            {
                pk: dt.datetime.fromtimestamp(wall, tz=dt.UTC)
                for pk, wall in pending.items()
            }
        )
        self._touched.update(pending)
        return len(pending)

    def clear(self) -> None:
        """Forget everything (tests, and after a fork)."""
        with self._lock:
            self._entries.clear()
            self._fast = {}
            self._used.clear()
            self._touched.clear()
            self._persisted = ("", 0.0)
        db.serving_read_succeeded()

    def persist(self, active: dict[str, ApiKeyInfo]) -> None:
        """Write the active server keys (hashes only) as the last known good."""
        keys = {
            digest: [
                info.pk,
                info.name,
                info.scope,
                info.environment_id,
                info.environment_key,
                info.user_id,
                info.prefix,
            ]
            for digest, info in sorted(active.items())
            if info.is_server and not info.is_revoked
        }
        version = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[
            :16
        ]
        now = time.monotonic()
        last_version, last_at = self._persisted
        if version == last_version and now - last_at < _REWRITE_AFTER:
            return
        try:
            lastgood.write(KEYS_RECORD, {"keys": keys}, version=version)
        except Exception as exc:  # a full disk must not stop the revalidation
            log.warning("cannot write the last known good API keys: %s", exc)
            return
        self._persisted = (version, now)

    def _background_alive(self) -> bool:
        # one comparison: the thread clears it when it ends, and a forked
        # child has another pid (procid.current) than the one that started it
        return self._running_in == procid.current

    def _ensure_started(self) -> None:
        if self._background_alive() or not setting("RULESET_BACKGROUND"):
            return
        with self._lock:
            if self._background_alive():
                return
            self._running_in = procid.current
            self._fast = {}
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="apikey-cache", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._running_in == os.getpid():
                self._running_in = 0
                self._fast = {}

    def _loop(self) -> None:
        from django.db import connection

        backoff = 0.0
        while not self._stop.is_set():
            interval = setting("APIKEY_REVALIDATE_INTERVAL")
            if self._stop.wait(interval + backoff):
                break
            try:
                self.revalidate()
                self.flush_last_used()
                backoff = 0.0
            except Exception as exc:
                log.warning("API key revalidation failed: %s", exc)
                db.serving_read_failed()
                backoff = min(max(backoff * 2, interval), 5.0)
                try:
                    connection.close()
                except Exception:
                    pass


def _query(digests: list[str]) -> dict[str, ApiKeyInfo]:
    from controlplane.apikeys.models import ApiKey

    return _infos(ApiKey.objects.filter(secret_hash__in=digests))


def _query_active() -> dict[str, ApiKeyInfo]:
    from controlplane.apikeys.models import ApiKey

    return _infos(ApiKey.objects.filter(revoked_at__isnull=True))


def _infos(queryset: Any) -> dict[str, ApiKeyInfo]:
    rows = queryset.values_list(
        "pk",
        "name",
        "scope",
        "environment_id",
        "environment__key",
        "user_id",
        "prefix",
        "revoked_at",
        "secret_hash",
    )
    return {
        row[8]: ApiKeyInfo(
            pk=row[0],
            name=row[1],
            scope=row[2],
            environment_id=row[3],
            environment_key=row[4],
            user_id=row[5],
            prefix=row[6],
            is_revoked=row[7] is not None,
        )
        for row in rows
    }


key_cache = KeyCache()


def resolve_key(raw: str) -> ApiKeyInfo | None:
    """Return the active key for ``raw`` or None; no query when warm."""
    return key_cache.resolve(raw)
