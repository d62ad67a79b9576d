"""``manage.py merchants suggest-pilot``: which merchants to pilot a flag on.

Thin: parses options, calls ``pilot_candidates_suggest`` and prints the
metrics behind each pick (rich table, or JSON with ``--format json``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich import box
from rich.console import Console
from rich.table import Table

from canary.services.outcomes import (
    PILOT_BIG_MULTIPLE,
    PILOT_MIN_EVENTS,
    PILOT_MIN_SUCCESS_RATE,
    PilotSuggestion,
    pilot_candidates_suggest,
)
from controlplane.exceptions import DomainError


def _positive_int(raw: str) -> int:
    import argparse

    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class Command(BaseCommand):
    help = (
        "Merchant tools for rollouts. suggest-pilot: rank merchants for a pilot"
        " by recent activity and success rate from outcome events."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        suggest = sub.add_parser(
            "suggest-pilot",
            help="rank merchants for a pilot: active in the last N days, success rate"
            f" above {PILOT_MIN_SUCCESS_RATE:.0%}, volume near the median",
        )
        suggest.add_argument("--flag", required=True, help="flag key")
        suggest.add_argument("--env", default="production", help="environment key")
        suggest.add_argument(
            "--days",
            type=_positive_int,
            default=7,
            help="look back this many days (default 7)",
        )
        suggest.add_argument(
            "--limit",
            type=_positive_int,
            default=5,
            help="how many picks to print (default 5)",
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
                days=options["days"],
                limit=options["limit"],
            )
        except DomainError as error:
            raise CommandError(" ".join(error.message.split())) from None
        if options["format"] == "json":
            self.stdout.write(json.dumps(suggestion.as_dict(), indent=2))
            return
        self._print(suggestion)

    def _print(self, suggestion: PilotSuggestion) -> None:
        console = Console(file=self.stdout, width=160, highlight=False, soft_wrap=False)
        basis = (
            f"events of flag {suggestion.flag_key}"
            if suggestion.basis == "flag"
            else f"all events in {suggestion.environment_key} (flag"
            f" {suggestion.flag_key} has no events yet)"
        )
        console.print(
            f"Pilot candidates for {suggestion.flag_key} in {suggestion.environment_key},"
            f" last {suggestion.days} days: {suggestion.merchants_seen} active merchants,"
            f" median {suggestion.median_events:g} events; basis: {basis}."
        )
        console.print(
            f"Rule: success rate > {PILOT_MIN_SUCCESS_RATE:.0%}, at least {PILOT_MIN_EVENTS}"
            f" events, at most {PILOT_BIG_MULTIPLE:g}x the median; score = success"
            " - 0.1*|log2(volume/median)| + 0.05*(active days/days)."
        )
        if not suggestion.picks:
            console.print("No merchant qualifies for a pilot.")
        else:
            table = Table(box=box.ASCII2, title="Suggested pilots (best first)")
            for column in (
                "#",
                "merchant",
                "events",
                "failures",
                "success",
                "active days",
                "last seen",
                "avg ms",
                "x median",
                "score",
                "why",
            ):
                table.add_column(column, overflow="fold")
            for rank, pick in enumerate(suggestion.picks, start=1):
                table.add_row(
                    str(rank),
                    pick.merchant,
                    str(pick.events),
                    str(pick.failures),
                    f"{pick.success_rate:.1%}",
                    f"{pick.active_days}/{suggestion.days}",
                    pick.last_seen.strftime("%Y-%m-%d %H:%M"),
                    f"{pick.avg_duration_ms:.1f}"
                    if pick.avg_duration_ms is not None
                    else "-",
                    f"{pick.volume_ratio:.2f}",
                    f"{pick.score:.3f}",
                    "; ".join(pick.reasons),
                )
            console.print(table)
        if suggestion.excluded:
            table = Table(box=box.ASCII2, title="Not suggested")
            for column in ("merchant", "events", "success", "why not"):
                table.add_column(column, overflow="fold")
            for item in suggestion.excluded[:20]:
                table.add_row(
                    item.merchant,
                    str(item.events),
                    f"{item.success_rate:.1%}",
                    "; ".join(item.reasons),
                )
            console.print(table)
            if len(suggestion.excluded) > 20:
                console.print(
                    f"... and {len(suggestion.excluded) - 20} more not suggested."
                )
