"""Tiny local HTTP servers for the outcome-event sender's tests.

``RecordingServer`` answers every POST with a fixed status and keeps the
decoded bodies; ``LosingProxy`` forwards each POST to an upstream (the live
control plane) but answers the first ones with 503, as when the answer of a
stored batch is lost on the way back.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, body = owner.handle(self.path, dict(self.headers), raw)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingServer(_Server):
    def __init__(self, status: int = 202) -> None:
        self.status = status
        super().__init__()

    def handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
        body = json.loads(raw)
        with self.lock:
            self.bodies.append(body)
        return self.status, {"accepted": len(body.get("events", []))}


class LosingProxy(_Server):
    def __init__(self, upstream: str, *, lose: int = 1) -> None:
        self.upstream = upstream.rstrip("/")
        self.lose = lose
        self.forwarded: list[int] = []
        super().__init__()

    def handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
        with self.lock:
            self.bodies.append(json.loads(raw))
        request = urllib.request.Request(
            self.upstream + path,
            data=raw,
            headers={
                "Authorization": headers.get("Authorization", ""),
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read())
        with self.lock:
            self.forwarded.append(status)
            if self.lose > 0:
                self.lose -= 1
                return 503, {"code": "unavailable", "message": "answer lost"}
        return status, body
