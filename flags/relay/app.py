"""A relay: one ASGI application, no database.

- ``GET /api/v1/environments/{key}/stream``: the stream (flags.stream),
  native, fed by the upstream follower;
- the evaluation routes: the hot path WSGI app (flags.hotpath), called
  inline in the event loop, since it does no I/O (the ruleset and the keys
  are in memory; a key seen for the first time is verified upstream in a
  thread instead, see ``_needs_thread``);
- ``POST /api/v1/events`` and ``GET /healthz``: the relay's own routes
  (canary.relay_events: outcome events validated as the upstream does,
  stored durably in the outbox, flags.relay.outbox), in a thread.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane.conf import setting
from controlplane.exceptions import DomainError
from flags import stream
from flags.hotpath import make_app, usage
from flags.relay import keys
from flags.relay.outbox import Outbox
from flags.relay.upstream import Upstream
from flags.relay.usage import UsageForwarder

# no ORM access past this point: a relay has no database


# (key resolver, outbox, health) -> the WSGI app of the relay's own routes
OwnRoutes = Callable[[Callable[[str], Any], Outbox, Callable[[], dict]], Callable]


class Relay:
    """The parts of one relay process, wired together.

    ``own_routes`` builds the WSGI app of the paths the hot path does not
    answer (``POST /api/v1/events``, ``GET /healthz``): canary's outcome
    events sit above flags, so ``manage.py relay`` (in canary) passes it.
    """

    def __init__(
        self, upstream_url: str, key: str, data_dir: Path, own_routes: OwnRoutes
    ) -> None:
        self.broker = stream.Broker()
        self.upstream = Upstream(
            upstream_url, key, data_dir, on_version=self.broker.publish
        )
        self.keys = keys.KeyVerifier(
            upstream_url, data_dir, lambda: self.upstream.environment
        )
        self.outbox = Outbox(upstream_url, key, data_dir)
        self.wsgi = make_app(
            ruleset_source=self.upstream.ruleset_source,
            key_resolver=self.keys.resolve,
            fallback=own_routes(self.keys.resolve, self.outbox, self.health),
        )

    def start(self) -> None:
        """Load what is on disk, reach the upstream, start the threads."""
        self.upstream.start()
        self.outbox.start()
        usage.set_sink(UsageForwarder(self.upstream.base_url, self.upstream.key))
        if self.upstream.version is not None:
            self.broker.publish(self.upstream.environment, self.upstream.version)

    def stop(self) -> None:
        """Stop the threads."""
        self.upstream.stop()
        self.outbox.stop()
        usage.set_sink(None)

    def health(self) -> dict[str, Any]:
        """Return what an operator wants to see first."""
        return {
            "environment": self.upstream.environment,
            "version": self.upstream.version,
            "stale": self.upstream.is_stale(),
            "upstream_reachable": self.upstream.is_reachable,
            "events_pending": self.outbox.pending(),
            "events_sent": self.outbox.sent,
            "stream_clients": self.broker.subscribers(),
        }

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        environment_key = stream.stream_environment(scope["path"])
        if environment_key is not None:
            await stream.serve_stream(
                scope,
                receive,
                send,
                environment_key=environment_key,
                broker=self.broker,
                authorize=self._authorize,
                heartbeat=float(setting("STREAM_HEARTBEAT_SECONDS")),
                initial_version=self._initial_version,
            )
            return
        body = await _read_body(receive, int(setting("OUTCOME_EVENTS_MAX_BODY_BYTES")))
        if body is None:
            await stream.send_json(
                send, 413, {"code": "PAYLOAD_TOO_LARGE", "message": "body too large"}
            )
            return
        environ = _environ(scope, body)
        if self._needs_thread(scope):
            status, headers, payload = await asyncio.to_thread(self._call, environ)
        else:
            status, headers, payload = self._call(environ)
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": payload})

    def _needs_thread(self, scope: dict) -> bool:
        # outcome events fsync; a key not yet verified asks the upstream
        if scope["path"] == "/api/v1/events":
            return True
        raw = stream.bearer(scope)
        return raw is not None and not self.keys.is_known(raw)

    def _call(self, environ: dict) -> tuple[int, list, bytes]:
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list, exc_info: Any = None) -> None:
            answer["status"] = int(status.split(" ", 1)[0])
            answer["headers"] = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers
            ]

        chunks = self.wsgi(environ, start_response)
        try:
            payload = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return answer["status"], answer["headers"], payload

    async def _authorize(self, environment_key: str, raw: str | None):
        if raw is None:
            return 401, {"code": "unauthorized", "message": "send a server key"}
        try:
            info = await asyncio.to_thread(self.keys.resolve, raw)
        except DomainError as exc:
            return exc.http_status, {"code": exc.code, "message": exc.message}
        if info is None:
            return 401, {
                "code": "unauthorized",
                "message": "unknown or revoked API key",
            }
        if not info.is_server or info.environment_key != environment_key:
            message = f"this key cannot read environment {environment_key!r}"
            return 403, {"code": "forbidden", "message": message}
        return None

    async def _initial_version(self, environment_key: str) -> int | None:
        return self.upstream.version


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """Return the whole body, or None past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(parts)


def _environ(scope: dict, body: bytes) -> dict[str, Any]:
    """Return a WSGI environ for an ASGI request whose body is read."""
    server = scope.get("server") or ("127.0.0.1", 0)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = text
        elif key != "CONTENT_LENGTH":
            header = f"HTTP_{key}"
            environ[header] = f"{environ[header]},{text}" if header in environ else text
    return environ
