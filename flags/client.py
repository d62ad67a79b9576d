"""A small Python client that evaluates flags locally.

It fetches ``GET /api/v1/environments/{env}/ruleset`` with a server key
and evaluates with ``flags.engine`` (the code the server runs), so answers
are identical to the API's. A thread follows the environment's stream
(``GET /api/v1/environments/{env}/stream``, server-sent events, see
flags.stream) and fetches the ruleset with ``If-None-Match`` as soon as a
new version is announced, so a change arrives within about a second; the
stream reconnects with backoff when it drops, and a second thread still
polls every ``poll_interval`` (30 s) as a safety net. When the server is
unreachable it keeps the last good ruleset. No method raises to the
caller: problems become the default with reason ERROR.

    client = FlagsClient("https://flags.example", key, "production")
    client.bool_value("sequential_workflow", {"merchant": "m-42"}, False)

A request scope records the flags served to one request and reports its
outcome (``POST /api/v1/events``, one event naming every flag served) from
a background sender (flags.client_events); ``close`` flushes it:

    with client.request("m-42") as req:  # an exception -> failure
        if req.bool_value("sequential_workflow", False): ...

Only the standard library and ``flags.engine`` (mmh3) are needed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from flags import engine
from flags.client_events import ClientRequest, EventSender
from flags.stream_client import StreamFollower

log = logging.getLogger(__name__)

__all__ = ["FlagsClient"]


class FlagsClient:
    """Local evaluation against a ruleset kept fresh by the stream and a poll."""

    def __init__(
        self,
        base_url: str,
        server_key: str,
        environment: str,
        *,
        poll_interval: float = 30.0,
        timeout: float = 5.0,
        stream: bool = True,
        start: bool = True,
        events: EventSender | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.environment = environment
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {server_key}",
            "Accept": "application/json",
        }
        self._ruleset: engine.Ruleset | None = None
        self._etag: str | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._fetch_lock = threading.Lock()
        # outcome events: the given sender, else one of its own on first use
        self._events = events
        self._owns_events = events is None
        self._server_key = server_key
        self._follower: StreamFollower | None = None
        if stream:
            self._follower = StreamFollower(
                f"{self.base_url}/api/v1/environments/{environment}/stream",
                {"Authorization": self._headers["Authorization"]},
                on_version=self._announced,
                timeout=max(timeout, 10.0),
                name="flags-client-stream",
            )
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Fetch once now (bounded by ``timeout``), then follow and poll."""
        self.refresh()
        if self._follower is not None:
            self._follower.start()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._poll, name="flags-client", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop following the stream and polling; flush its own events."""
        if self._events is not None and self._owns_events:
            self._events.close(timeout=self.timeout)
        self._stop.set()
        if self._follower is not None:
            self._follower.stop()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None

    def __enter__(self) -> FlagsClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def events(self) -> EventSender:
        """The sender of this client's outcome events (created on first use)."""
        if self._events is None:
            self._events = EventSender(
                self.base_url, self._server_key, timeout=self.timeout
            )
        return self._events

    def request(
        self,
        merchant: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        name: str = "",
    ) -> ClientRequest:
        """Return a scope that evaluates for ``merchant`` and reports once.

        Each flag it serves is recorded; on exit (or ``report``) one outcome
        event with every flag served is queued on ``events``.
        """
        return ClientRequest(self, merchant, attributes, name=name)

    @property
    def version(self) -> int | None:
        return self._ruleset.version if self._ruleset is not None else None

    @property
    def is_streaming(self) -> bool:
        """True while the stream is connected."""
        return self._follower is not None and self._follower.connected

    @property
    def is_stale(self) -> bool:
        """True when the last fetch failed (answers use the last good ruleset)."""
        return self.last_error is not None

    def refresh(self) -> bool:
        """Fetch the ruleset if it changed; return True on success (incl. 304)."""
        with self._fetch_lock:  # the stream and the poll never fetch at once
            return self._fetch()

    def _announced(self, version: int) -> None:
        """Fetch until the announced version is served (the stream's thread).

        The serving process that answers the fetch may hear of the change a
        moment after the one that announced it: retry briefly.
        """
        delay = 0.02
        for _attempt in range(8):
            current = self.version
            if current is not None and current >= version:
                return
            if self._stop.is_set():
                return
            self.refresh()
            current = self.version
            if current is not None and current >= version:
                return
            self._stop.wait(delay)
            delay = min(delay * 2, 1.0)

    def _fetch(self) -> bool:
        url = f"{self.base_url}/api/v1/environments/{self.environment}/ruleset"
        headers = dict(self._headers)
        if self._etag and self._ruleset is not None:
            headers["If-None-Match"] = self._etag
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                    etag = response.headers.get("ETag")
            except urllib.error.HTTPError as exc:
                if exc.code == 304:
                    self._ok()
                    return True
                raise
            ruleset = engine.compile_ruleset(json.loads(payload))
            self._ruleset = ruleset
            self._etag = etag
            self._ok()
            return True
        except Exception as exc:  # never raise: keep the last good ruleset
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.warning(
                    "flags: ruleset fetch failed, serving the last one: %s", message
                )
            self.last_error = message
            return False

    def _ok(self) -> None:
        self.last_error = None
        self.last_success = time.time()
        self._ready.set()

    def _poll(self) -> None:
        delay = self.poll_interval
        while not self._stop.wait(delay):
            ok = self.refresh()
            delay = (
                self.poll_interval
                if ok
                else min(delay * 2, max(self.poll_interval, 60.0))
            )

    # -- evaluation --------------------------------------------------------

    def evaluate(
        self,
        flag_key: str,
        context: Mapping[str, Any] | None = None,
        default: Any = None,
        *,
        value_type: str | None = None,
    ) -> engine.Evaluation:
        """Return the full answer (value, variation, reason, level, version)."""
        try:
            ruleset = self._ruleset
            if ruleset is None:
                return engine.Evaluation(
                    str(flag_key),
                    default,
                    None,
                    engine.Reason.ERROR,
                    engine.Level.DEFAULT,
                    0,
                    engine.ErrorCode.GENERAL,
                    f"no ruleset loaded yet ({self.last_error or 'not fetched'})",
                )
            return engine.evaluate(
                ruleset, flag_key, context or {}, default, value_type=value_type
            )
        except Exception as exc:
            return engine.Evaluation(
                str(flag_key),
                default,
                None,
                engine.Reason.ERROR,
                engine.Level.DEFAULT,
                0,
                engine.ErrorCode.GENERAL,
                f"{type(exc).__name__}: {exc}",
            )

    def evaluate_all(
        self, context: Mapping[str, Any] | None = None
    ) -> list[engine.Evaluation]:
        """Return answers for every flag of the ruleset, in key order."""
        ruleset = self._ruleset
        if ruleset is None:
            return []
        return [self.evaluate(key, context) for key in sorted(ruleset.flags)]

    def value(
        self,
        flag_key: str,
        context: Mapping[str, Any] | None = None,
        default: Any = None,
    ) -> Any:
        return self.evaluate(flag_key, context, default).value

    def bool_value(
        self, flag_key: str, context: Mapping[str, Any] | None, default: bool
    ) -> bool:
        return self.evaluate(flag_key, context, default, value_type="bool").value

    def string_value(
        self, flag_key: str, context: Mapping[str, Any] | None, default: str
    ) -> str:
        return self.evaluate(flag_key, context, default, value_type="string").value

    def number_value(
        self, flag_key: str, context: Mapping[str, Any] | None, default: float
    ) -> float:
        return self.evaluate(flag_key, context, default, value_type="number").value

    def json_value(
        self, flag_key: str, context: Mapping[str, Any] | None, default: Any
    ) -> Any:
        return self.evaluate(flag_key, context, default, value_type="json").value
