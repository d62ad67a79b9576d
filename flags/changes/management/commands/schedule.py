"""``manage.py schedule ...``: scheduled changes on the services."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit.actors import SYSTEM, Actor, actor_for_cli
from controlplane.exceptions import DomainError
from flags.changes import services
from flags.changes.management.commands._common import (
    change_header,
    change_line,
    parse_arguments,
    parse_when,
    when,
)
from flags.changes.models import ScheduledChange
from flags.changes.operations import OPERATIONS


class Command(BaseCommand):
    help = (
        "Scheduled changes: 'add' schedules OPERATION KEY=VALUE... --at TIME "
        "(ISO 8601 or a span such as 10m), 'list' shows them, 'cancel' drops "
        "one that has not run, 'tick' applies the due ones now (what the beat "
        "worker does every second)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument(
            "--actor", help="Name recorded in the audit log (default: your login name)."
        )
        sub = parser.add_subparsers(dest="subcommand", required=True)
        p = sub.add_parser(
            "add",
            parents=[common],
            help="Schedule a change, e.g. add flag_state.percentage "
            "flag=checkout_theme environment=production percentage=50 --at 2h.",
        )
        p.add_argument("operation", help=f"One of: {', '.join(sorted(OPERATIONS))}.")
        p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
        p.add_argument("--json", help="The arguments as one JSON object.")
        p.add_argument("--at", required=True, help="ISO 8601 time or a span (30m).")
        p.add_argument(
            "--state-version", type=int, dest="based_on", help="Based on this version."
        )
        p.add_argument("--reason", default="")
        p = sub.add_parser("list", help="List scheduled changes, soonest first.")
        p.add_argument("--status")
        p.add_argument("--env")
        p.add_argument("--limit", type=int, default=50)
        p = sub.add_parser(
            "cancel", parents=[common], help="Cancel a scheduled change."
        )
        p.add_argument("id")
        p.add_argument("--reason", default="")
        sub.add_parser("tick", help="Apply the due changes now.")

    def handle(self, *args: Any, **options: Any) -> None:
        handler: Callable[[dict], None] = getattr(self, f"_{options['subcommand']}")
        try:
            handler(options)
        except DomainError as exc:
            raise CommandError(" ".join(exc.message.split())) from None

    @staticmethod
    def _actor(options: dict) -> Actor:
        return actor_for_cli(options.get("actor") or None)

    def _add(self, options: dict) -> None:
        change = services.scheduled_change_create(
            actor=self._actor(options),
            operation=options["operation"],
            arguments=parse_arguments(options["pairs"], options["json"]),
            run_at=parse_when(options["at"]),
            expected_version=options["based_on"],
            reason=options["reason"],
        )
        self.stdout.write(
            f"scheduled change {change.pk}: {change.operation} of {change.target} "
            f"at {when(change.run_at)} (based on state version "
            f"{change.based_on_version})"
        )

    def _list(self, options: dict) -> None:
        changes = ScheduledChange.objects.select_related("environment")
        if options["status"]:
            changes = changes.filter(status=options["status"])
        if options["env"]:
            changes = changes.filter(environment__key=options["env"])
        rows = list(changes[: max(1, options["limit"])])
        if not rows:
            self.stdout.write("No scheduled changes.")
            return
        self.stdout.write(change_header("  at  result"))
        for change in rows:
            self.stdout.write(change_line(change, f"  at {when(change.run_at)}"))

    def _cancel(self, options: dict) -> None:
        change = services.scheduled_change_cancel(
            scheduled_change_id=options["id"],
            actor=self._actor(options),
            reason=options["reason"],
        )
        self.stdout.write(f"scheduled change {change.pk} cancelled")

    def _tick(self, options: dict) -> None:
        applied = services.scheduled_changes_apply_due(actor=SYSTEM)
        self.stdout.write(f"{applied} due change(s) processed")
