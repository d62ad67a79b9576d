"""The control plane's feed of the stream: environment versions from the DB.

One thread per process waits for change notices the way flags.snapshot does
(PostgreSQL ``LISTEN``, Redis pub/sub with ``RULESET_REDIS_URL``, else a
poll every ``RULESET_POLL_INTERVAL``), reads every environment's
``ruleset_version`` in one query and publishes them to the process's
``Broker``. A failing database is retried with backoff; clients keep their
connection (heartbeats go on) and hear the next version once it is back.
"""

from __future__ import annotations

import logging
import threading
import time

from controlplane.conf import setting
from flags.stream import Broker

log = logging.getLogger(__name__)

_WAKE = 0.5  # longest wait before the thread looks at its stop event
_MAX_BACKOFF = 5.0


class DatabaseWatcher:
    """Publish every environment's ruleset version when it moves."""

    def __init__(self, broker: Broker, using: str = "default") -> None:
        self.broker = broker
        self.using = using
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0

    def start(self) -> None:
        """Start the thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="stream-watch", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def check(self) -> None:
        """Read every environment's version (one query) and publish them."""
        from flags.models import Environment

        rows = Environment.objects.using(self.using).values_list(
            "key", "ruleset_version"
        )
        for key, version in rows:
            self.broker.publish(key, version)
        self.failures = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
                redis_url = setting("RULESET_REDIS_URL")
                if redis_url:
                    self._listen_redis(redis_url)
                elif _vendor(self.using) == "postgresql":
                    self._listen_postgres()
                else:
                    while not self._stop.wait(setting("RULESET_POLL_INTERVAL")):
                        self.check()
            except Exception as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("stream: version check failed: %s", exc)
                _close(self.using)
                self._stop.wait(min(0.25 * 2 ** min(self.failures, 5), _MAX_BACKOFF))
        _close(self.using)

    def _listen_postgres(self) -> None:
        from django.db import connections

        from flags.propagation import CHANNEL

        wrapper = connections[self.using]
        params = wrapper.get_connection_params()
        for name in ("cursor_factory", "context", "server_side_binding"):
            params.pop(name, None)
        params.pop("prepare_threshold", None)
        params.setdefault("connect_timeout", 5)
        with wrapper.Database.connect(**params, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.check()  # a change may have committed before LISTEN
            due = time.monotonic() + setting("RULESET_POLL_INTERVAL")
            while not self._stop.is_set():
                wait = max(min(due - time.monotonic(), _WAKE), 0.0)
                noticed = any(True for _ in conn.notifies(timeout=wait, stop_after=1))
                if noticed or time.monotonic() >= due:
                    self.check()
                    due = time.monotonic() + setting("RULESET_POLL_INTERVAL")

    def _listen_redis(self, url: str) -> None:
        import redis

        from flags.propagation import CHANNEL

        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            self.check()
            due = time.monotonic() + setting("RULESET_POLL_INTERVAL")
            while not self._stop.is_set():
                wait = max(min(due - time.monotonic(), _WAKE), 0.0)
                message = pubsub.get_message(timeout=wait)
                if message is not None or time.monotonic() >= due:
                    self.check()
                    due = time.monotonic() + setting("RULESET_POLL_INTERVAL")
        finally:
            pubsub.close()
            client.close()


def _vendor(using: str) -> str:
    from django.db import connections

    return connections[using].vendor


def _close(using: str) -> None:
    from django.db import connections

    try:
        connections[using].close()
    except Exception:
        pass
