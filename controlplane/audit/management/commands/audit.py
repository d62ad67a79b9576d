"""``manage.py audit verify|export|checkpoint``: check, export, anchor.

Thin: parse arguments, call ``audit_chain_verify`` / ``audit_events_export``
/ ``audit_checkpoint_write``, format the result. User mistakes raise
``CommandError`` with one line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from controlplane.audit.checkpoints import (
    audit_checkpoint_write,
    audit_checkpoints_read,
    checkpoint_path,
)
from controlplane.audit.services import audit_chain_verify, audit_events_export
from controlplane.exceptions import AuditChainBroken, InvalidInput
from controlplane.management.commands._output import OutputCommand

_RELATIVE_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> dt.timedelta | None:
    """Return the span of a relative time like ``90s``, ``12h`` or ``7d``.

    Return None when ``text`` is not of that form (it may be an ISO time).
    """
    match = _RELATIVE_RE.match(text or "")
    if match is None:
        return None
    amount, unit = int(match.group(1)), match.group(2).lower()
    return dt.timedelta(seconds=amount * _UNIT_SECONDS[unit])


def parse_instant(text: str, *, option: str) -> dt.datetime:
    """Return an aware datetime from ISO 8601 (``2026-12-01T00:00Z``).

    A time without a zone is read as UTC. Raise CommandError naming
    ``option`` when ``text`` is not a time.
    """
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise CommandError(
            f"{option}: {text!r} is not a time: use ISO 8601 (2026-12-01T00:00Z) "
            "or a relative span (30m, 12h, 7d, 2w)"
        ) from None
    if timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    return value


def parse_since(text: str) -> dt.datetime:
    """Return the start time for ``--since``: ISO 8601 or ``now - span``."""
    span = parse_duration(text)
    if span is not None:
        return timezone.now() - span
    return parse_instant(text, option="--since")


class Command(OutputCommand):
    help = (
        "Audit log: 'verify' walks every hash chain (one per environment and "
        "'global') and names each broken one and where; 'export' writes events "
        "as JSON lines; 'checkpoint' appends each chain's head to the "
        "checkpoint file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="{verify,export,checkpoint}"
        )
        verify = sub.add_parser(
            "verify",
            help="Check every hash chain; exit 1 when one is broken.",
        )
        verify.add_argument(
            "--chains",
            action="store_true",
            help="Also print one line per chain: events verified, head, state.",
        )
        verify.add_argument(
            "--against",
            metavar="CHECKPOINT_FILE",
            help="Also prove the chain still holds every (id, hash) anchored in "
            "this checkpoint file: finds events cut from the end and rewrites.",
        )
        verify.add_argument(
            "--latest",
            action="store_true",
            help="With --against: check only the last checkpoint of each chain.",
        )
        checkpoint = sub.add_parser(
            "checkpoint",
            help="Append each chain's head (id, hash, time) to the checkpoint file.",
        )
        checkpoint.add_argument(
            "--file",
            help="Append to this file instead of the AUDIT_CHECKPOINT_PATH setting.",
        )
        export = sub.add_parser(
            "export", help="Write events (oldest first) as JSON lines."
        )
        export.add_argument(
            "--since",
            help="Only events at or after this time: ISO 8601 or relative (24h, 7d).",
        )
        export.add_argument(
            "--output", "-o", help="Write to this file instead of stdout."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["subcommand"] == "verify":
                self._verify(
                    options.get("against"),
                    options.get("latest", False),
                    options.get("chains", False),
                )
            elif options["subcommand"] == "checkpoint":
                self._checkpoint(options.get("file"))
            else:
                self._export(options.get("since"), options.get("output"))
        except DatabaseError as exc:
            first_line = (
                str(exc).strip().splitlines()[0]
                if str(exc).strip()
                else type(exc).__name__
            )
            raise CommandError(
                f"database error: {first_line} (did you run 'manage.py migrate'?)"
            )

    def _verify(self, against: str | None, latest: bool, chains: bool) -> None:
        if latest and not against:
            raise CommandError("--latest needs --against CHECKPOINT_FILE")
        anchors = []
        if against:
            try:
                anchors = audit_checkpoints_read(against, latest_only=latest)
            except InvalidInput as exc:
                raise CommandError(f"--against: {exc.message}") from None
        report = audit_chain_verify(anchors=anchors)
        if chains:
            self.rows(
                None,
                ("chain", "events verified", "head event", "state"),
                (
                    (
                        chain.chain,
                        chain.checked,
                        chain.head_id or "-",
                        "ok" if chain.ok else f"BROKEN at event {chain.broken_id}",
                    )
                    for chain in report.chains
                ),
                empty="no chains",
            )
        if not report.ok:
            others = [
                f"chain {chain.chain} at event {chain.broken_id}"
                for chain in report.chains
                if not chain.ok and chain.chain != report.chain
            ]
            also = f"; also broken: {', '.join(others)}" if others else ""
            raise CommandError(
                f"BROKEN: event {report.broken_id}: {report.problem}; "
                f"{report.checked} events before it verified{also}"
            )
        line = f"OK: {report.checked} events verified"
        if against:
            plural = "" if report.anchors_matched == 1 else "s"
            line += f"; {report.anchors_matched} checkpoint{plural} matched"
        self.stdout.write(line)

    def _checkpoint(self, file: str | None) -> None:
        target = Path(file) if file else checkpoint_path()
        try:
            checkpoints = audit_checkpoint_write(path=target)
        except AuditChainBroken as exc:
            raise CommandError(f"BROKEN: {exc.message}") from None
        except OSError as exc:
            raise CommandError(
                f"cannot append to {str(target)!r}: {exc.strerror or exc}"
            ) from None
        if not checkpoints:
            self.stdout.write("no event yet: nothing to checkpoint")
            return
        self.stdout.write(f"checkpoints appended to {target}:")
        self.rows(
            None,
            ("chain", "event", "hash", "checkpointed at"),
            ((c.chain, c.id, c.hash, c.checkpointed_at) for c in checkpoints),
            empty="no checkpoint written",
        )

    def _export(self, since_text: str | None, output: str | None) -> None:
        since = parse_since(since_text) if since_text else None
        if output:
            try:
                handle: TextIO = open(output, "w", encoding="utf-8")
            except OSError as exc:
                raise CommandError(
                    f"--output: cannot write {output!r}: {exc.strerror}"
                ) from None
            with handle:
                count = self._write_lines(handle, since)
            self.stderr.write(f"exported {count} events to {output}")
        else:
            # self.stdout ends each write with a newline: one event per write.
            try:
                for event in audit_events_export(since=since):
                    self.stdout.write(
                        json.dumps(event, ensure_ascii=False, sort_keys=True)
                    )
            except BrokenPipeError:
                # The reader (e.g. `| head`) has gone; stop quietly.
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)

    @staticmethod
    def _write_lines(handle: TextIO, since: dt.datetime | None) -> int:
        count = 0
        for event in audit_events_export(since=since):
            handle.write(json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
        return count
