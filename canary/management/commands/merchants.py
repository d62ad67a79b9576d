"""``manage.py merchants suggest-pilot``: which merchants to pilot a flag on.

Thin: parses the criteria, calls ``canary.selectors.pilot_candidates_suggest``
and prints the picks and the merchants left out with the reason (rich
tables, or JSON with ``--format json``). Help strings go through argparse's
%-formatting: a literal percent sign is written ``%%``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import CommandError, CommandParser
from rich import box
from rich.table import Table

from canary.selectors import (
    PILOT_MONTH_DAYS,
    PilotCriteria,
    PilotSuggestion,
    pilot_candidates_suggest,
)
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand

LEFT_OUT_SHOWN = 20


def _whole(minimum: int) -> Any:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def _share(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1 (0.8 = 80%)")
    return value


class Command(OutputCommand):
    help = (
        "Merchant tools for rollouts. suggest-pilot: pick pilot merchants for a flag"
        " from the outcome events of the last 30 days."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        default = PilotCriteria()
        suggest = sub.add_parser(
            "suggest-pilot",
            help="suggest pilot merchants: active registry merchants seen in the last"
            f" {default.active_days} days, success above"
            f" {default.min_success * 100:g}%%, {default.min_monthly}-{default.max_monthly}"
            f" workflows in {PILOT_MONTH_DAYS} days; says why the others were left out",
        )
        suggest.add_argument("--flag", required=True, help="flag key")
        suggest.add_argument("--env", default="production", help="environment key")
        suggest.add_argument(
            "--active-days",
            "--days",
            dest="active_days",
            type=_whole(1),
            default=default.active_days,
            help="seen at least once in this many days (default %(default)s)",
        )
        suggest.add_argument(
            "--min-success",
            type=_share,
            default=default.min_success,
            help="success rate must be above this share (default %(default)s = 80%%)",
        )
        suggest.add_argument(
            "--min-monthly",
            type=_whole(0),
            default=default.min_monthly,
            help=f"at least this many workflows (outcome events) in {PILOT_MONTH_DAYS}"
            " days (default %(default)s)",
        )
        suggest.add_argument(
            "--max-monthly",
            type=_whole(1),
            default=default.max_monthly,
            help=f"at most this many workflows in {PILOT_MONTH_DAYS} days"
            " (default %(default)s)",
        )
        suggest.add_argument(
            "--limit",
            type=_whole(1),
            default=5,
            help="how many picks to print (default %(default)s)",
        )
        suggest.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "suggest-pilot":
            self._suggest_pilot(options)

    def _suggest_pilot(self, options: dict) -> None:
        from flags.selectors import flag_get

        try:
            flag = flag_get(options["flag"])
            suggestion = pilot_candidates_suggest(
                flag_key=flag.key,
                environment_key=options["env"],
                criteria=PilotCriteria(
                    active_days=options["active_days"],
                    min_success=options["min_success"],
                    min_monthly=options["min_monthly"],
                    max_monthly=options["max_monthly"],
                ),
                limit=options["limit"],
            )
        except DomainError as error:
            raise CommandError(" ".join(error.message.split())) from None
        if options["format"] == "json":
            self.stdout.write(json.dumps(suggestion.as_dict(), indent=2))
            return
        self._print(suggestion)

    def _print(self, suggestion: PilotSuggestion) -> None:
        console = self.console(width=160)
        basis = (
            f"events of flag {suggestion.flag_key}"
            if suggestion.basis == "flag"
            else f"all events in {suggestion.environment_key} (flag"
            f" {suggestion.flag_key} has no events yet)"
        )
        console.print(
            f"Pilot candidates for {suggestion.flag_key} in {suggestion.environment_key}:"
            f" {suggestion.merchants_seen} merchants with events in the last"
            f" {PILOT_MONTH_DAYS} days; basis: {basis}."
        )
        console.print(f"Rule: {suggestion.criteria.text()}.")
        if not suggestion.picks:
            console.print("No merchant qualifies for a pilot.")
        else:
            table = Table(box=box.ASCII2, title="Suggested pilots (best first)")
            for column in (
                "#",
                "merchant",
                "workflows",
                "failures",
                "success",
                "active days",
                "last seen",
                "avg ms",
            ):
                table.add_column(column, overflow="fold")
            for rank, pick in enumerate(suggestion.picks, start=1):
                table.add_row(
                    str(rank),
                    pick.merchant,
                    str(pick.events),
                    str(pick.failures),
                    f"{pick.success_rate:.1%}",
                    str(pick.active_days),
                    pick.last_seen.strftime("%Y-%m-%d %H:%M"),
                    f"{pick.avg_duration_ms:.1f}"
                    if pick.avg_duration_ms is not None
                    else "-",
                )
            console.print(table)
        if suggestion.left_out:
            table = Table(box=box.ASCII2, title="Left out (nearest misses first)")
            for column in ("merchant", "workflows", "success", "last seen", "why"):
                table.add_column(column, overflow="fold")
            for item in suggestion.left_out[:LEFT_OUT_SHOWN]:
                table.add_row(
                    item.merchant,
                    str(item.events),
                    f"{item.success_rate:.1%}",
                    item.last_seen.strftime("%Y-%m-%d"),
                    "; ".join(item.reasons),
                )
            console.print(table)
            if suggestion.left_out_total > LEFT_OUT_SHOWN:
                console.print(
                    f"... and {suggestion.left_out_total - LEFT_OUT_SHOWN} more left"
                    f" out (--format json lists the nearest {len(suggestion.left_out)})."
                )
