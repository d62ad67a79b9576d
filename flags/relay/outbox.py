"""Outcome events on a relay: on disk first, then upstream in batches.

``append`` writes the events, each with a fresh id, as lines of
``<data-dir>/outbox.jsonl`` and fsyncs the file before it returns, so an
event a client saw accepted (202) survives a crash of the relay. A sender
thread posts the lines after ``<data-dir>/outbox.sent`` (the byte offset of
the first line not yet acknowledged, replaced atomically) to the upstream's
``POST /api/v1/events`` in batches of at most ``RELAY_EVENTS_BATCH``, and
moves the offset only after a 202.

Every event carries its id upstream, where the ingestion stores an id once
per environment (canary.services.outcomes): a batch sent again because its
answer was lost, or because the relay crashed between the 202 and the
offset, is not counted twice. So no event is lost while the upstream is
down, and none arrives twice. A batch the upstream refuses as invalid (400)
is logged and skipped: sending it again would never succeed. A fully sent
outbox is emptied (offset first, then the file: a crash in between sends
the file again, which the ids make harmless).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from controlplane.conf import setting
from flags.relay import disk

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.jsonl"
OFFSET_FILE = "outbox.sent"
_COMPACT_AFTER = 1 << 20  # bytes


class Outbox:
    """Durable queue of outcome events bound for the upstream."""

    def __init__(
        self, base_url: str, key: str, data_dir: Path, *, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.data_dir / OUTBOX_FILE
        self.offset_path = self.data_dir / OFFSET_FILE
        self.timeout = timeout
        self._lock = threading.Lock()  # appends and compaction
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._offset = self._read_offset()
        self._repair()

    def _repair(self) -> None:
        """Cut a torn last line (a crash mid-append, never answered 2xx).

        Otherwise the next append would be glued to it and lost with it.
        """
        try:
            with open(self.path, "rb+") as handle:
                data = handle.read()
                if not data or data.endswith(b"\n"):
                    return
                keep = data.rfind(b"\n") + 1
                log.warning(
                    "relay: cutting a torn outbox line (%s bytes)", len(data) - keep
                )
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
        except FileNotFoundError:
            return

    # -- accepting -------------------------------------------------------------

    def append(self, events: list[dict[str, Any]]) -> int:
        """Store events durably (fsync) before the caller answers 2xx.

        Each event keeps its own ``id`` if it has one, else gets a new one.
        """
        lines = "".join(
            json.dumps({"id": uuid.uuid4().hex, **event}, separators=(",", ":")) + "\n"
            for event in events
        )
        with self._lock:
            created = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                disk.fsync_dir(self.data_dir)
        self._wake.set()
        return len(events)

    def pending(self) -> int:
        """Return how many events are not yet acknowledged upstream."""
        return len(self._read_batch(1 << 30)[0])

    # -- sending ---------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread."""
        self._thread = threading.Thread(
            target=self._run, name="relay-outbox", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the sender thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1)

    def _read_offset(self) -> int:
        value = disk.read_record(self.offset_path)
        return value if isinstance(value, int) and value >= 0 else 0

    def _read_batch(self, limit: int) -> tuple[list[dict], int]:
        """Return up to ``limit`` unsent events and the offset after them."""
        events: list[dict] = []
        offset = self._offset
        try:
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break  # a torn last line (crash mid-append): never acked
                    if len(events) >= limit:
                        break
                    offset += len(line)
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        log.warning("relay: skipping a damaged outbox line")
        except FileNotFoundError:
            pass
        return events, offset

    def _run(self) -> None:
        delay = 0.25
        while not self._stop.is_set():
            events, offset = self._read_batch(int(setting("RELAY_EVENTS_BATCH")))
            if not events:
                if offset != self._offset:
                    self._advance(offset)
                self._compact()
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._send(events)
            except Exception as exc:  # upstream down: keep the batch, retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)  # a retry is one connection attempt
                continue
            delay = 0.25
            self._advance(offset)

    def _send(self, events: list[dict]) -> None:
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/events",
            data=json.dumps({"events": events}).encode(),
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 400:
                self.rejected += len(events)
                log.error(
                    "relay: upstream refused %s outcome events, skipped: %s",
                    len(events),
                    exc.read()[:500],
                )
                return
            raise
        self.sent += len(events)
        self.last_error = None

    def _advance(self, offset: int) -> None:
        disk.write_record(self.offset_path, offset)
        self._offset = offset

    def _compact(self) -> None:
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                return
            if size < _COMPACT_AFTER or size != self._offset:
                return
            self._advance(0)
            with open(self.path, "w") as handle:
                handle.flush()
                os.fsync(handle.fileno())
