"""A relay's copy of its upstream's ruleset, kept current.

The relay learns its environment from the upstream (an empty native
evaluation with its key), then holds the environment's ruleset in memory:

- a thread follows the upstream's stream (flags.stream_client) and fetches
  the ruleset with ``If-None-Match`` as soon as a new version is announced;
- another thread makes the same conditional GET every
  ``RELAY_POLL_SECONDS`` (a lost notice, the upstream's own stale flag);
- each ruleset received is written to ``<data-dir>/ruleset.json``
  atomically, and read back at start, so a relay started while the
  upstream is unreachable serves at once.

Answers are stale when nothing was heard from the upstream (a response or
a stream heartbeat) for ``RULESET_STALE_AFTER`` seconds, when the upstream
itself said its ruleset is stale, or while the ruleset is the one from disk.
No Django model, no database: only HTTP and files.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from controlplane.conf import setting
from controlplane.exceptions import DatabaseUnavailable, NotFound
from flags import engine
from flags.relay import disk
from flags.stream_client import StreamFollower

log = logging.getLogger(__name__)

RULESET_FILE = "ruleset.json"


class UpstreamUnavailable(DatabaseUnavailable):
    """No ruleset yet: the upstream has not answered and nothing is on disk."""


class Upstream:
    """Follow one environment's ruleset on the upstream control plane."""

    def __init__(
        self,
        base_url: str,
        key: str,
        data_dir: Path,
        *,
        on_version: Callable[[str, int], None] = lambda env, version: None,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.data_dir = Path(data_dir)
        self.on_version = on_version
        self.timeout = timeout
        self.environment: str | None = None
        self._discovered = False
        self._ruleset: engine.Ruleset | None = None
        self._etag: str | None = None
        self._from_disk = False
        self._upstream_stale = False
        self._last_contact = 0.0  # monotonic; 0 = never since start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._follower: StreamFollower | None = None
        self.fetches = 0

    # -- what the hot path asks -------------------------------------------

    def ruleset_source(self, environment_key: str) -> tuple[engine.Ruleset, bool]:
        """Return ``(ruleset, stale)``; NotFound for another environment."""
        ruleset = self._ruleset
        if environment_key != self.environment:
            raise NotFound(
                f"environment {environment_key!r} not found", field="environment"
            )
        if ruleset is None:
            raise UpstreamUnavailable(
                "the ruleset cannot be loaded: upstream unavailable"
            )
        return ruleset, self.is_stale()

    def is_stale(self) -> bool:
        """Return True when the answers may be out of date."""
        if self._from_disk or self._upstream_stale or not self._last_contact:
            return True
        return time.monotonic() - self._last_contact > setting("RULESET_STALE_AFTER")

    @property
    def version(self) -> int | None:
        ruleset = self._ruleset
        return ruleset.version if ruleset is not None else None

    @property
    def is_reachable(self) -> bool:
        """True when the upstream answered within ``RULESET_STALE_AFTER``."""
        return bool(self._last_contact) and (
            time.monotonic() - self._last_contact <= setting("RULESET_STALE_AFTER")
        )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Load the ruleset on disk, try the upstream once, start the threads."""
        self._load_disk()
        try:
            self.refresh()
        except Exception as exc:
            log.warning(
                "relay: upstream %s unreachable at start: %s", self.base_url, exc
            )
        self._poller = threading.Thread(
            target=self._poll, name="relay-poll", daemon=True
        )
        self._poller.start()

    def stop(self) -> None:
        """Stop the threads."""
        self._stop.set()
        if self._follower is not None:
            self._follower.stop()
        if self._poller is not None:
            self._poller.join(self.timeout + 1)

    def _poll(self) -> None:
        while not self._stop.wait(float(setting("RELAY_POLL_SECONDS"))):
            try:
                self.refresh()
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):  # the relay's own key: an operator's job
                    log.warning("relay: the upstream refuses the relay's key: %s", exc)
            except Exception as exc:
                log.debug("relay: upstream poll failed: %s", exc)

    # -- fetching ------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}

    def contact(self) -> None:
        """Note that the upstream just answered."""
        self._last_contact = time.monotonic()

    def _discover(self) -> str:
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/evaluate",
            data=b'{"context":{},"flags":[]}',
            headers={**self._headers(), "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            environment = json.loads(response.read())["environment"]
        if not isinstance(environment, str) or not environment:
            raise ValueError("the upstream named no environment")
        return environment

    def refresh(self) -> bool:
        """Make one conditional GET; return True when the ruleset changed.

        Raises what urllib raises when the upstream cannot be reached.
        """
        # the lock only orders this relay's own fetches (stream and poll);
        # no request of a client ever waits for it
        with self._lock:
            if not self._discovered:
                self.environment = self._discover()
                self._discovered = True
                self.contact()
            if self._follower is None:
                self._start_follower()
            headers = self._headers()
            if self._etag and self._ruleset is not None and not self._from_disk:
                headers["If-None-Match"] = self._etag
            request = urllib.request.Request(
                f"{self.base_url}/api/v1/environments/{self.environment}/ruleset",
                headers=headers,
                method="GET",
            )
            self.fetches += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                    etag = response.headers.get("ETag")
                    stale = response.headers.get("X-Ruleset-Stale") == "true"
            except urllib.error.HTTPError as exc:
                if exc.code != 304:
                    raise
                self._upstream_stale = exc.headers.get("X-Ruleset-Stale") == "true"
                self.contact()
                return False
            data = json.loads(payload)
            ruleset = engine.compile_ruleset(data)
            self._ruleset = ruleset
            self._etag = etag
            self._from_disk = False
            self._upstream_stale = stale
            self.contact()
        self._persist(data)
        self.on_version(ruleset.environment, ruleset.version)
        return True

    def _announced(self, version: int) -> None:
        """Fetch until the announced version is served (the stream's thread)."""
        delay = 0.02
        for _attempt in range(8):
            current = self.version
            if (current is not None and current >= version) or self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception as exc:
                log.debug("relay: fetch after a notice failed: %s", exc)
            current = self.version
            if current is not None and current >= version and not self._from_disk:
                return
            self._stop.wait(delay)
            delay = min(delay * 2, 1.0)

    def _start_follower(self) -> None:
        self._follower = StreamFollower(
            f"{self.base_url}/api/v1/environments/{self.environment}/stream",
            {"Authorization": f"Bearer {self.key}"},
            on_version=self._announced,
            on_contact=self.contact,
            timeout=max(3 * float(setting("STREAM_HEARTBEAT_SECONDS")), 3.0),
            name="relay-stream",
        )
        self._follower.start()

    # -- disk ----------------------------------------------------------------

    def _persist(self, data: dict) -> None:
        try:
            disk.write_record(
                self.data_dir / RULESET_FILE,
                {"environment": data.get("environment"), "ruleset": data},
            )
        except OSError as exc:  # a full disk must not stop the serving
            log.warning("relay: cannot write the last known good ruleset: %s", exc)

    def _load_disk(self) -> None:
        record = disk.read_record(self.data_dir / RULESET_FILE)
        if not isinstance(record, dict):
            return
        try:
            ruleset = engine.compile_ruleset(record["ruleset"])
        except Exception as exc:
            log.warning("relay: ignoring the ruleset on disk: %s", exc)
            return
        self._ruleset = ruleset
        self._from_disk = True
        self.environment = ruleset.environment
        log.warning(
            "relay: serving environment %r version %s from disk until the"
            " upstream answers",
            ruleset.environment,
            ruleset.version,
        )
