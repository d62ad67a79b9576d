"""Ruleset change notices pushed to subscribers as server-sent events.

``GET /api/v1/environments/{key}/stream`` (a server key of that
environment) answers ``text/event-stream`` and stays open: one ``ruleset``
event with the environment's current version at once (unless the client's
``Last-Event-ID`` already names it), one more each time the version moves,
and a comment line every ``STREAM_HEARTBEAT_SECONDS`` so that both ends
notice a dead connection. Event ids are ruleset versions, so a client that
reconnects with ``Last-Event-ID`` hears only what it missed (the latest
version: notices coalesce, the ruleset itself is fetched by a conditional
GET).

The endpoint is a native ASGI coroutine: a connected client costs a task
and an event, never a worker thread. A process has one ``Broker``; its feed
(``DatabaseWatcher`` on the control plane, the upstream follower on a
relay) runs in one thread per process and publishes versions; the broker
fans them out to every connected client of this process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# (environment key, raw key or None) -> (status, body) refused, or None: allowed
Authorize = Callable[[str, str | None], Awaitable[tuple[int, dict[str, Any]] | None]]

PREFIX = "/api/v1/environments/"
SUFFIX = "/stream"


def stream_environment(path: str) -> str | None:
    """Return the environment key of a stream path, else None."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    key = path[len(PREFIX) : -len(SUFFIX)]
    return key if key and "/" not in key else None


class Broker:
    """Latest ruleset version per environment, fanned out to async clients.

    ``publish`` may be called from any thread; subscribers wait in the
    event loop that first subscribed.
    """

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.published = 0

    def current(self, environment_key: str) -> int | None:
        """Return the last version published for the environment."""
        return self._versions.get(environment_key)

    def publish(self, environment_key: str, version: int) -> None:
        """Record ``version``; wake the environment's subscribers if it moved."""
        with self._lock:
            if self._versions.get(environment_key) == version:
                return
            self._versions[environment_key] = version
            self.published += 1
            loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake, environment_key)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _wake(self, environment_key: str) -> None:
        for event in self._waiters.get(environment_key, ()):
            event.set()

    def subscribers(self) -> int:
        """Return how many clients are connected."""
        # a copy first: the loop may add a subscriber meanwhile
        return sum(len(waiters) for waiters in list(self._waiters.values()))

    def attach(self, environment_key: str) -> asyncio.Event:
        """Register a subscriber in the running loop; return its wake event."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiters.setdefault(environment_key, set()).add(event)
        return event

    def detach(self, environment_key: str, event: asyncio.Event) -> None:
        """Forget a subscriber."""
        waiters = self._waiters.get(environment_key)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(environment_key, None)


def event_bytes(environment_key: str, version: int) -> bytes:
    """Return one SSE ``ruleset`` event."""
    data = json.dumps({"environment": environment_key, "version": version})
    return f"id: {version}\nevent: ruleset\ndata: {data}\n\n".encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def bearer(scope: Scope) -> str | None:
    """Return the raw key of ``Authorization: Bearer <key>`` or None."""
    header = _header(scope, b"authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list | None = None
) -> None:
    """Answer a plain JSON response."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def serve_stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    environment_key: str,
    broker: Broker,
    authorize: Authorize,
    heartbeat: float,
    initial_version: Callable[[str], Awaitable[int | None]],
) -> None:
    """Answer one stream request until the client goes away."""
    if scope.get("method") not in ("GET", "HEAD"):
        await send_json(
            send,
            405,
            {"code": "METHOD_NOT_ALLOWED", "message": "use GET"},
            [(b"allow", b"GET")],
        )
        return
    refused = await authorize(environment_key, bearer(scope))
    if refused is not None:
        status, body = refused
        extra = [(b"www-authenticate", b'Bearer realm="controlplane"')]
        await send_json(send, status, body, extra if status == 401 else None)
        return
    wake = broker.attach(environment_key)
    disconnected = asyncio.Event()

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
                wake.set()
                return

    watcher = asyncio.ensure_future(watch_disconnect())
    try:
        version = broker.current(environment_key)
        if version is None:
            version = await initial_version(environment_key)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        sent = _last_event_id(scope)
        # the retry hint: reconnect after one second, not the browser's three
        first = b"retry: 1000\n\n"
        if version is not None and version != sent:
            first += event_bytes(environment_key, version)
            sent = version
        await send({"type": "http.response.body", "body": first, "more_body": True})
        while not disconnected.is_set():
            try:
                await asyncio.wait_for(wake.wait(), heartbeat)
            except TimeoutError:
                await send(
                    {
                        "type": "http.response.body",
                        "body": b": hb\n\n",
                        "more_body": True,
                    }
                )
                continue
            wake.clear()
            version = broker.current(environment_key)
            if disconnected.is_set():
                break
            if version is not None and version != sent:
                sent = version
                await send(
                    {
                        "type": "http.response.body",
                        "body": event_bytes(environment_key, version),
                        "more_body": True,
                    }
                )
    except Exception:  # noqa: BLE001 - the client went away mid-write
        pass
    finally:
        broker.detach(environment_key, wake)
        watcher.cancel()


def _last_event_id(scope: Scope) -> int | None:
    raw = _header(scope, b"last-event-id")
    try:
        return int(raw) if raw else None
    except ValueError:
        return None
