"""Outcome events from apps: a request scope and a background sender.

A request scope records every flag served to one request for one merchant
(flag key -> variation key) and, when the request ends, queues one outcome
event ``{id, merchant, flags, outcome, duration_ms, occurred_at, name}``
for ``POST /api/v1/events`` (canary.services.outcomes stores it once per
flag). ``EventSender`` posts the queue in batches from a thread with the
server key: the queue is bounded (the oldest event is dropped and counted
when it is full), a failed post is retried with backoff, and every event
carries a unique id so a batch sent again after its answer was lost is not
counted twice. ``flags.client`` opens scopes that evaluate locally; the
OpenFeature hook (``flags.openfeature_hook``) records into the scope that
is current in the context (``contextvars``).

Only the standard library is needed, as for ``flags.client``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flags import engine
    from flags.client import FlagsClient

log = logging.getLogger(__name__)

__all__ = ["ClientRequest", "EventSender", "RequestScope", "current_scope"]

# The server's limit of flags per event (canary.services.outcomes): a scope
# that served more is sent as several events sharing one id (rows are
# unique per id and flag, so each flag is still stored once).
MAX_EVENT_FLAGS = 20
OUTCOMES = ("success", "failure")
# The server refuses a whole batch for one bad event: an event it would
# refuse is dropped here instead (merchant and name limits of the server).
_MAX_MERCHANT = 128
_MAX_NAME = 100
_EVENT_INDEX = re.compile(r"^events\[(\d+)\]")

_current: ContextVar[RequestScope | None] = ContextVar(
    "flags_request_scope", default=None
)


def current_scope() -> RequestScope | None:
    """Return the request scope open in this context, if any."""
    return _current.get()


class EventSender:
    """Post outcome events in batches from a background thread.

    ``enqueue`` never blocks and never raises. Counters: ``sent`` (stored or
    acknowledged by the server), ``dropped`` (oldest events pushed out of a
    full queue), ``rejected`` (refused by the server with 4xx: never
    retried) and ``failed`` (given up after ``max_attempts``).
    """

    def __init__(
        self,
        base_url: str,
        server_key: str,
        *,
        batch_size: int = 500,
        max_queue: int = 10_000,
        flush_interval: float = 1.0,
        timeout: float = 5.0,
        max_attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/api/v1/events"
        self.batch_size = max(1, batch_size)
        self.max_queue = max(1, max_queue)
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._headers = {
            "Authorization": f"Bearer {server_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._queue: deque[dict] = deque()
        self._inflight = 0
        self._cond = threading.Condition()
        self._flush_requested = False
        self._closed = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dropped = 0
        self.rejected = 0
        self.failed = 0
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        """Events queued or being posted."""
        with self._cond:
            return len(self._queue) + self._inflight

    def enqueue(self, event: Mapping[str, Any]) -> None:
        """Queue one event; drop the oldest one when the queue is full."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(dict(event))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flags-client-events", daemon=True
                )
                self._thread.start()
            if len(self._queue) in (1, self.batch_size):
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Post what is queued now; return True once nothing is pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._queue or self._inflight:
                if self._thread is None or not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 0.5)
            return True

    def close(self, timeout: float = 10.0) -> bool:
        """Flush (within ``timeout``), then stop the thread; later events drop.

        Return True when everything queued was delivered or refused.
        """
        self._closing.set()
        delivered = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=max(self.timeout, 1.0) + 1)
        return delivered

    # -- the thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._flush_requested or self._queue):
                    self._cond.wait()
                # the first event waits up to flush_interval for company
                deadline = time.monotonic() + self.flush_interval
                while not (
                    self._closed
                    or self._flush_requested
                    or len(self._queue) >= self.batch_size
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if not self._queue:
                    self._flush_requested = False
                    self._cond.notify_all()
                    if self._closed:
                        return
                    continue
                count = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                self._inflight = len(batch)
            try:
                self._deliver(batch)
            except Exception as exc:  # the thread must survive anything
                self.failed += len(batch)
                self.last_error = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._inflight = 0
                self._cond.notify_all()

    def _deliver(self, batch: list[dict]) -> None:
        """Post one batch, retrying transient failures with backoff.

        A retried batch carries the same event ids: the server stores each
        id once, so an attempt whose answer was lost is not counted twice.
        """
        delay = self.backoff
        attempt = 0
        while batch:
            attempt += 1
            status, body = self._post(batch)
            if 200 <= status < 300:
                self.sent += len(batch)
                self.last_error = None
                return
            if status == 400 and attempt <= self.max_attempts:
                bad = _refused_indices(body, len(batch))
                if bad and len(bad) < len(batch):
                    # one bad event refuses the batch: send the others again
                    self.rejected += len(bad)
                    batch = [e for i, e in enumerate(batch) if i not in bad]
                    continue
            if 400 <= status < 500 and status not in (408, 429):
                self.rejected += len(batch)
                log.warning("flags: %d outcome events refused (%s)", len(batch), status)
                return
            if attempt >= self.max_attempts:
                self.failed += len(batch)
                log.warning(
                    "flags: %d outcome events lost after %d attempts: %s",
                    len(batch),
                    attempt,
                    self.last_error,
                )
                return
            # closing: retry soon rather than sleep through the close
            self._closing.wait(delay if not self._closing.is_set() else 0.2)
            delay = min(delay * 2, self.max_backoff)

    def _post(self, batch: list[dict]) -> tuple[int, Any]:
        """Return (HTTP status, decoded body); status 0 for no answer."""
        payload = json.dumps({"events": batch}, separators=(",", ":")).encode()
        request = urllib.request.Request(
            self.url, data=payload, headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            self.last_error = f"HTTP {exc.code}"
            try:
                return exc.code, _decode(exc.read())
            finally:
                exc.close()
        except Exception as exc:  # connection refused, timeout, reset
            self.last_error = f"{type(exc).__name__}: {exc}"
            return 0, None


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _refused_indices(body: Any, size: int) -> set[int]:
    """Return the indices the server's field errors name (``events[i]...``)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return set()
    found = set()
    for key in errors:
        match = _EVENT_INDEX.match(str(key))
        if match and int(match.group(1)) < size:
            found.add(int(match.group(1)))
    return found


class RequestScope:
    """The flags served to one request for one merchant, reported once.

    Use it as a context manager: on exit the request is reported as
    ``success``, or as ``failure`` when an exception escapes (it is
    re-raised), unless ``report`` was called first. The duration is
    measured with ``time.monotonic`` from the scope's start unless given.
    A scope opened without a merchant takes the first one recorded;
    evaluations for another merchant are not recorded. A scope that served
    no flag reports nothing.
    """

    def __init__(
        self, sender: EventSender, merchant: str | None = None, *, name: str = ""
    ) -> None:
        self.sender = sender
        self.merchant = merchant
        self.name = name
        self.id = uuid.uuid4().hex
        self.flags: dict[str, str] = {}
        self.events: list[dict] = []
        self._started = time.monotonic()
        self._reported = False
        self._lock = threading.Lock()
        self._token: Token | None = None

    @property
    def is_reported(self) -> bool:
        return self._reported

    def record(
        self, flag_key: str, variation: str | None, merchant: str | None = None
    ) -> bool:
        """Note that ``flag_key`` served ``variation``; return True if kept.

        The first variation served for a flag is the one reported. Nothing
        is kept without a variation (an error answer), for another merchant
        than the scope's, or after the report.
        """
        if not flag_key or not isinstance(variation, str) or not variation:
            return False
        with self._lock:
            if self._reported:
                return False
            if merchant is not None:
                if self.merchant is None:
                    self.merchant = merchant
                elif merchant != self.merchant:
                    return False
            self.flags.setdefault(str(flag_key), variation)
        return True

    def report(
        self,
        outcome: str = "success",
        *,
        duration_ms: float | None = None,
        name: str | None = None,
    ) -> list[dict]:
        """Queue the request's outcome event(s) once; return them.

        Raise ``ValueError`` for an outcome other than success or failure.
        A second call returns ``[]``.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        if duration_ms is None:
            duration_ms = (time.monotonic() - self._started) * 1000.0
        with self._lock:
            if self._reported:
                return []
            self._reported = True
            flags = dict(self.flags)
            merchant = self.merchant
        name = self.name if name is None else name
        if not flags or not _sendable(merchant, name):
            return []
        base = {
            "id": self.id,
            "merchant": merchant,
            "outcome": outcome,
            "duration_ms": round(max(float(duration_ms), 0.0), 3),
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        if name:
            base["name"] = name
        keys = list(flags)
        self.events = [
            {**base, "flags": {key: flags[key] for key in chunk}}
            for chunk in (
                keys[start : start + MAX_EVENT_FLAGS]
                for start in range(0, len(keys), MAX_EVENT_FLAGS)
            )
        ]
        for event in self.events:
            self.sender.enqueue(event)
        return self.events

    def __enter__(self) -> RequestScope:
        self._started = time.monotonic()
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if not self._reported:
            self.report("failure" if exc_type is not None else "success")


def _sendable(merchant: Any, name: Any) -> bool:
    """Return False for an event the server would refuse (and its batch)."""
    if not isinstance(merchant, str) or not merchant or len(merchant) > _MAX_MERCHANT:
        return False
    if "\x00" in merchant or not isinstance(name, str) or len(name) > _MAX_NAME:
        return False
    try:
        (merchant + name).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


class ClientRequest(RequestScope):
    """A request scope that evaluates with a ``FlagsClient`` and records.

    ``with client.request("m-1001") as req: req.bool_value("a", False)``
    """

    def __init__(
        self,
        client: FlagsClient,
        merchant: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        name: str = "",
    ) -> None:
        super().__init__(client.events, merchant, name=name)
        self.client = client
        self.context = {**(attributes or {}), "merchant": merchant}

    def evaluate(
        self, flag_key: str, default: Any = None, *, value_type: str | None = None
    ) -> engine.Evaluation:
        """Return the client's answer for this merchant and record it."""
        answer = self.client.evaluate(
            flag_key, self.context, default, value_type=value_type
        )
        self.record(flag_key, answer.variation)
        return answer

    def value(self, flag_key: str, default: Any = None) -> Any:
        return self.evaluate(flag_key, default).value

    def bool_value(self, flag_key: str, default: bool) -> bool:
        return self.evaluate(flag_key, default, value_type="bool").value

    def string_value(self, flag_key: str, default: str) -> str:
        return self.evaluate(flag_key, default, value_type="string").value

    def number_value(self, flag_key: str, default: float) -> float:
        return self.evaluate(flag_key, default, value_type="number").value

    def json_value(self, flag_key: str, default: Any) -> Any:
        return self.evaluate(flag_key, default, value_type="json").value
