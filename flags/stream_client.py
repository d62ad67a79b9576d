"""Follow a ruleset stream (flags.stream) from a thread; standard library only.

Used by the Python client (flags.client) and by relays. ``follow`` keeps one
connection open, calls ``on_version`` for every ``ruleset`` event and
``on_contact`` for every line received (heartbeats included), and returns
when the connection ends; ``StreamFollower`` reconnects with exponential
backoff and ``Last-Event-ID``.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_BACKOFF = 0.25
MAX_BACKOFF = 30.0


def follow(
    url: str,
    headers: dict[str, str],
    *,
    on_version: Callable[[int], None],
    on_contact: Callable[[], None] = lambda: None,
    last_event_id: int | None = None,
    timeout: float = 10.0,
    stop: threading.Event | None = None,
) -> int | None:
    """Read one stream connection until it ends; return the last event id.

    ``timeout`` bounds the silence between two lines (heartbeats come every
    second or so): a dead connection is noticed. Raises what urllib raises
    for a connection or HTTP error (401, 403, 5xx).
    """
    request_headers = {**headers, "Accept": "text/event-stream"}
    if last_event_id is not None:
        request_headers["Last-Event-ID"] = str(last_event_id)
    request = urllib.request.Request(url, headers=request_headers, method="GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        event_id: int | None = None
        data = ""
        for raw in response:
            if stop is not None and stop.is_set():
                break
            on_contact()
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:  # end of one event
                if data:
                    version = _version(data, event_id)
                    if version is not None:
                        last_event_id = version
                        on_version(version)
                data = ""
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                try:
                    event_id = int(value)
                except ValueError:
                    event_id = None
            elif name == "data":
                data += value
    return last_event_id


def _version(data: str, event_id: int | None) -> int | None:
    try:
        version = json.loads(data).get("version")
    except (ValueError, AttributeError):
        version = None
    if isinstance(version, int) and not isinstance(version, bool):
        return version
    return event_id


class StreamFollower:
    """A thread that keeps following a stream, reconnecting with backoff."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        on_version: Callable[[int], None],
        on_contact: Callable[[], None] = lambda: None,
        timeout: float = 10.0,
        name: str = "flags-stream",
    ) -> None:
        self.url = url
        self.headers = headers
        self.on_version = on_version
        self.on_contact = on_contact
        self.timeout = timeout
        self.last_event_id: int | None = None
        self.connected = False
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start following (once; a stopped follower stays stopped)."""
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop following (the open connection ends at its next line)."""
        self._stop.set()
        self._thread.join(timeout)

    def _contact(self) -> None:
        self.connected = True
        self.on_contact()

    def _run(self) -> None:
        delay = MIN_BACKOFF
        while not self._stop.is_set():
            self.connected = False
            try:
                self.connections += 1
                self.last_event_id = follow(
                    self.url,
                    self.headers,
                    on_version=self.on_version,
                    on_contact=self._contact,
                    last_event_id=self.last_event_id,
                    timeout=self.timeout,
                    stop=self._stop,
                )
            except Exception as exc:  # never raise: back off and reconnect
                if self.connected or delay == MIN_BACKOFF:
                    log.info("flags: stream %s interrupted: %s", self.url, exc)
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (401, 403):
                    delay = MAX_BACKOFF  # a refused key will not fix itself soon
            if self.connected:  # it worked for a while: start the backoff over
                delay = MIN_BACKOFF
            self.connected = False
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, MAX_BACKOFF)
