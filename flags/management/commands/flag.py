"""``manage.py flag ...``: the per-merchant scripts operators use, on services.

Subcommands: list, show, create, enable, disable, kill, restore, percentage,
override add|remove|list. Each parses its input, calls one selector or
service, and prints the result with rich (plain text when not a terminal).
Every user mistake raises ``CommandError`` with one readable line, before
anything is written: the services validate before they write.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from controlplane.audit.actors import Actor, actor_for_cli
from controlplane.exceptions import DomainError
from flags import selectors, services
from flags.changes import gate
from flags.management.commands import _flag_lifecycle
from flags.management.commands._flag_reads import FlagReads
from flags.models import Environment, Flag, FlagState, ValueType


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Command(FlagReads):
    help = (
        "Manage flags from the command line: list, show, create, enable, disable, "
        "kill, restore, percentage, and per-merchant overrides (override add|remove|list)."
    )

    # -- arguments ------------------------------------------------------------

    def add_arguments(self, parser: CommandParser) -> None:
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument(
            "--actor", help="Name recorded in the audit log (default: your login name)."
        )
        env_required = argparse.ArgumentParser(add_help=False)
        env_required.add_argument(
            "--env", required=True, help="Environment key, e.g. production."
        )

        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND"
        )

        p = sub.add_parser(
            "list", help="List flags and how each environment serves them."
        )
        p.add_argument("--env", help="Show one environment in detail.")
        p.add_argument(
            "--archived", action="store_true", help="Include archived flags."
        )

        p = sub.add_parser(
            "show", help="Show a flag, its variations, states and overrides."
        )
        p.add_argument("flag")

        p = sub.add_parser(
            "create", parents=[common], help="Create a flag (off everywhere)."
        )
        p.add_argument("key")
        p.add_argument("--name", default="")
        p.add_argument(
            "--type", dest="value_type", default="bool", choices=ValueType.values
        )
        p.add_argument(
            "--variations",
            help='JSON list, e.g. \'[{"key": "classic", "value": "classic"}, ...]\' '
            "(bool flags get on/off).",
        )
        p.add_argument(
            "--off-variation", help="Variation served when off (default: off/last)."
        )
        p.add_argument("--description", default="")
        p.add_argument("--owner", default="")
        p.add_argument(
            "--tag", action="append", dest="tags", default=[], help="Repeatable."
        )

        for name, text in (
            ("enable", "Turn targeting on (overrides, rules and the default apply)."),
            ("disable", "Turn targeting off (everyone gets the off variation)."),
        ):
            p = sub.add_parser(name, parents=[common, env_required], help=text)
            p.add_argument("flag")

        p = sub.add_parser(
            "kill",
            parents=[common, env_required],
            help="Emergency off: everyone gets the off variation now.",
        )
        p.add_argument("flag")
        p.add_argument("--reason", default="")

        p = sub.add_parser(
            "restore",
            parents=[common, env_required],
            help="Undo a kill: targeting on again as before.",
        )
        p.add_argument("flag")
        p.add_argument("--reason", default="")

        p = sub.add_parser(
            "percentage",
            parents=[common, env_required],
            help="Serve the treatment to PCT%% of merchants by default.",
        )
        p.add_argument("flag")
        p.add_argument("pct", metavar="PCT", help="0..100, up to 3 decimals.")
        p.add_argument("--treatment", help="Variation for the PCT%% (bool: on).")
        p.add_argument("--control", help="Variation for the rest (bool: off).")

        p = sub.add_parser(
            "override", help="Per-merchant overrides: add, remove, list."
        )
        osub = p.add_subparsers(
            dest="override_action", required=True, metavar="{add,remove,list}"
        )
        p = osub.add_parser(
            "add",
            parents=[common, env_required],
            help="Give one merchant a variation; print what is now in force.",
        )
        p.add_argument("flag")
        p.add_argument("merchant")
        p.add_argument(
            "--variation", default="on", help="Variation to serve (default: on)."
        )
        p.add_argument("--note", default="")
        p.add_argument(
            "--expires",
            help="ISO 8601 time (2026-12-01T00:00Z; no zone = UTC) or a span from now (7d, 12h).",
        )
        p = osub.add_parser(
            "remove",
            parents=[common, env_required],
            help="Remove one merchant's override.",
        )
        p.add_argument("flag")
        p.add_argument("merchant")
        p.add_argument("--reason", default="")
        p = osub.add_parser(
            "list", parents=[env_required], help="List a flag's overrides."
        )
        p.add_argument("flag")
        _flag_lifecycle.add_subcommands(sub, common=common, env_required=env_required)

    # -- dispatch -------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["subcommand"]
        if name == "override":
            name = f"override_{options['override_action']}"
        handler: Callable[[dict], None] = getattr(self, f"_{name}", None)
        extra = _flag_lifecycle.handler(self, options)  # trigger, stale, archive
        try:
            extra() if extra is not None else handler(options)
        except DomainError as exc:
            raise CommandError(_one_line(exc.message)) from None
        except DatabaseError as exc:
            text = _one_line(str(exc)) or type(exc).__name__
            raise CommandError(
                f"database error: {text} (did you run 'manage.py migrate'?)"
            ) from None

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _actor(options: dict) -> Actor:
        return actor_for_cli(options.get("actor") or None)

    def _gated(
        self,
        options: dict,
        operation: str,
        apply: Callable[[], Any] | None,
        **fields: Any,
    ) -> Any:
        """Apply now, or print the change request four-eyes made (return None)."""
        outcome = gate.submit(
            actor=self._actor(options),
            operation=operation,
            arguments=gate.state_arguments(
                flag=options["flag"], environment=options["env"], **fields
            ),
            apply=apply,
        )
        if outcome.is_pending:
            self.stdout.write(gate.pending_message(outcome.change_request))
            return None
        return outcome.result

    @staticmethod
    def _resolve(options: dict) -> tuple[Flag, Environment]:
        flag = selectors.flag_get(options["flag"])
        environment = selectors.environment_get(options["env"])
        return flag, environment

    # -- create ---------------------------------------------------------------

    def _create(self, options: dict) -> None:
        variations = None
        if options.get("variations"):
            try:
                variations = json.loads(options["variations"])
            except json.JSONDecodeError as exc:
                raise CommandError(
                    f"--variations: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
        flag = services.flag_create(
            actor=self._actor(options),
            key=options["key"],
            name=options["name"],
            value_type=options["value_type"],
            variations=variations,
            off_variation=options.get("off_variation") or None,
            description=options["description"],
            owner=options["owner"],
            tags=options["tags"],
        )
        keys = ", ".join(flag.variation_keys)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created flag {flag.key} ({flag.value_type}; variations {keys}); "
                f"disabled in every environment."
            )
        )

    # -- state changes --------------------------------------------------------

    def _enable(self, options: dict) -> None:
        self._state_change(options, "flag_state.enable")

    def _disable(self, options: dict) -> None:
        self._state_change(options, "flag_state.disable")

    def _kill(self, options: dict) -> None:
        self._state_change(options, "flag_state.kill", reason=options["reason"])

    def _restore(self, options: dict) -> None:
        self._state_change(options, "flag_state.restore", reason=options["reason"])

    def _percentage(self, options: dict) -> None:
        state = self._state_change(
            options,
            "flag_state.percentage",
            percentage=self._parse_percentage(options["pct"]),
            treatment=options.get("treatment"),
            control=options.get("control"),
        )
        if state is not None and not state.enabled:
            self._warn(
                f"{state.flag.key} is {'killed' if state.killed_at else 'disabled'}"
                f" in {state.environment.key}: the percentage applies once it is"
                " enabled"
            )

    def _state_change(
        self, options: dict, operation: str, **fields: Any
    ) -> FlagState | None:
        """Apply a state change (the operation's own service call) or queue it.

        The change request four-eyes made is printed and None returned;
        otherwise the state's new line is printed and the state returned.
        """
        self._resolve(options)  # unknown flag or environment: one clear line
        state = self._gated(options, operation, None, **fields)
        if state is not None:
            self._state_line(state)
        return state

    @staticmethod
    def _parse_percentage(text: str) -> float:
        try:
            value = float(text.strip().rstrip("%"))
        except ValueError:
            raise CommandError(
                f"percentage: {text!r} is not a number (0..100)"
            ) from None
        if not math.isfinite(value) or value < 0 or value > 100:
            raise CommandError(f"percentage: {text} is outside 0..100")
        return value

    # -- overrides ------------------------------------------------------------

    def _override_add(self, options: dict) -> None:
        flag, environment = self._resolve(options)
        merchant = selectors.merchant_get(options["merchant"])
        if not merchant.is_active:
            raise CommandError(
                f"merchant {merchant.key!r} is inactive: overrides need an "
                "active merchant"
            )
        expires_at = self._parse_expires(options.get("expires"))
        done = self._gated(
            options,
            "override.set",
            lambda: services.override_set(
                actor=self._actor(options),
                flag=flag,
                environment=environment,
                merchant=merchant,
                variation=options["variation"],
                note=options["note"],
                expires_at=expires_at,
            ),
            merchant=merchant.key,
            variation=options["variation"],
            note=options["note"],
            expires_at=expires_at,
        )
        if done is not None:
            self._print_in_force(flag, environment, merchant)

    def _override_remove(self, options: dict) -> None:
        flag, environment = self._resolve(options)
        merchant = selectors.merchant_get(options["merchant"])
        outcome = gate.submit(
            actor=self._actor(options),
            operation="override.remove",
            arguments=gate.state_arguments(
                flag=flag.key,
                environment=environment.key,
                merchant=merchant.key,
                reason=options["reason"],
            ),
            apply=lambda: services.override_remove(
                actor=self._actor(options),
                flag=flag,
                environment=environment,
                merchant=merchant,
                reason=options["reason"],
            ),
        )
        if outcome.is_pending:
            self.stdout.write(gate.pending_message(outcome.change_request))
            return
        self.stdout.write(
            f"Override removed: {flag.key} in {environment.key} for {merchant.key}"
        )
        self._print_in_force(flag, environment, merchant)

    def _override_list(self, options: dict) -> None:
        flag, environment = self._resolve(options)
        overrides = list(selectors.override_list(flag=flag, environment=environment))
        if not overrides:
            self.stdout.write(f"No overrides of {flag.key} in {environment.key}.")
            return
        self.print(
            self._overrides_table(
                f"Overrides of {flag.key} in {environment.key} ({len(overrides)})",
                overrides,
            )
        )
