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

from flags import notices
from flags.stream import Broker

log = logging.getLogger(__name__)

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
                notices.listen(self.using, self._stop, lambda _noticed: self.check())
            except Exception as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("stream: version check failed: %s", exc)
                notices.close_connection(self.using)
                self._stop.wait(min(0.25 * 2 ** min(self.failures, 5), _MAX_BACKOFF))
        notices.close_connection(self.using)
