"""Subcommands of ``manage.py flag`` about a flag's life: triggers, stale, archive.

- ``flag trigger create|list|revoke``: alert triggers (the secret URL is
  printed once, at creation);
- ``flag stale [--days N] [--environment E]``: flags serving one variation
  to everyone, or not evaluated, for N days, each with its archive command;
- ``flag archive KEY`` (and ``--undo``).

``flag.py`` adds these with ``add_subcommands`` and dispatches with
``handler``. Like the rest of ``flag``, each calls one service or selector;
a mistake raises CommandError (``flag.py`` turns DomainError into one).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flags import selectors, services
from flags.services.triggers import trigger_url
from flags.stale import stale_flags

MAX_DAYS = 36500


def add_subcommands(
    sub: Any,
    *,
    common: argparse.ArgumentParser,
    env_required: argparse.ArgumentParser,
) -> None:
    """Add ``trigger``, ``stale`` and ``archive`` to ``flag``'s subparsers."""
    p = sub.add_parser(
        "trigger",
        help="Alert triggers (secret URLs that kill a flag): create, list, revoke.",
    )
    tsub = p.add_subparsers(
        dest="trigger_action", required=True, metavar="{create,list,revoke}"
    )
    p = tsub.add_parser(
        "create",
        parents=[common, env_required],
        help="Create a trigger for a flag in one environment; print its URL once.",
    )
    p.add_argument("flag")
    p.add_argument("--name", required=True, help="What calls it, e.g. alertmanager.")
    p.add_argument(
        "--can-restore",
        action="store_true",
        help="Let a resolved alert (or action restore) undo this trigger's kill.",
    )
    p.add_argument(
        "--base-url",
        default="http://127.0.0.1:8000",
        help="Address of the control plane, put before the path printed.",
    )
    p = tsub.add_parser("list", help="List triggers (not revoked, unless --all).")
    p.add_argument("--flag")
    p.add_argument("--env")
    p.add_argument("--all", action="store_true", help="Include revoked triggers.")
    p = tsub.add_parser("revoke", parents=[common], help="Revoke a trigger by id.")
    p.add_argument("id")

    p = sub.add_parser(
        "stale",
        help="Flags serving one variation to everyone, or not evaluated, for N days.",
    )
    p.add_argument("--days", default="30", help="N (default 30).")
    p.add_argument("--environment", "--env", dest="environment")

    p = sub.add_parser(
        "archive",
        parents=[common],
        help="Archive a flag (evaluations answer FLAG_NOT_FOUND).",
    )
    p.add_argument("flag")
    p.add_argument("--undo", action="store_true", help="Unarchive it instead.")


def handler(command: BaseCommand, options: dict) -> Callable[[], None] | None:
    """Return the handler of one of these subcommands, None for any other."""
    name = options["subcommand"]
    if name == "trigger":
        name = f"trigger_{options['trigger_action']}"
    run = _HANDLERS.get(name)
    if run is None:
        return None
    return lambda: run(command, options)


def _trigger_create(command: Any, options: dict) -> None:
    flag, environment = command._resolve(options)
    trigger, raw = services.alert_trigger_create(
        actor=command._actor(options),
        flag=flag,
        environment=environment,
        name=options["name"],
        can_restore=options["can_restore"],
    )
    url = options["base_url"].rstrip("/") + trigger_url(trigger, raw)
    command.stdout.write(
        f"trigger {trigger.pk} ({trigger.name}) for {flag.key} in {environment.key}"
        f"{', may restore' if trigger.can_restore else ''}"
    )
    command.stdout.write(f"URL (shown once, keep it secret): {url}")


def _trigger_list(command: Any, options: dict) -> None:
    triggers = list(
        services.alert_trigger_list(
            flag=selectors.flag_get(options["flag"]) if options["flag"] else None,
            environment=selectors.environment_get(options["env"])
            if options["env"]
            else None,
            include_revoked=options["all"],
        )
    )
    if not triggers:
        command.stdout.write(
            "No triggers: create one with "
            "'manage.py flag trigger create FLAG --env ENV --name NAME'."
        )
        return
    table = _output(command, "table")(
        "Alert triggers",
        "id",
        "name",
        "flag",
        "env",
        "restore",
        "prefix",
        "last kill",
        "revoked",
    )
    for trigger in triggers:
        table.add_row(
            str(trigger.pk),
            trigger.name,
            trigger.flag.key,
            trigger.environment.key,
            "yes" if trigger.can_restore else "no",
            trigger.prefix,
            _when(trigger.last_kill_at),
            _when(trigger.revoked_at),
        )
    _output(command, "print")(table)


def _trigger_revoke(command: Any, options: dict) -> None:
    trigger = services.alert_trigger_revoke(
        actor=command._actor(options),
        trigger=services.alert_trigger_get(options["id"]),
    )
    command.stdout.write(
        f"trigger {trigger.pk} ({trigger.name}) revoked: its URL answers 410 now"
    )


def _stale(command: Any, options: dict) -> None:
    text = options["days"]
    if not text.isdigit() or not 0 < int(text) <= MAX_DAYS:
        raise CommandError(f"--days: must be a whole number from 1 to {MAX_DAYS}")
    days = int(text)
    environment = (
        selectors.environment_get(options["environment"])
        if options["environment"]
        else None
    )
    found = stale_flags(days=days, environment=environment)
    where = f" in {environment.key}" if environment is not None else ""
    if not found:
        command.stdout.write(f"No stale flags{where} for {days} days.")
        return
    command.stdout.write(f"{len(found)} stale flag(s){where} for {days} days:")
    for item in found:
        command.stdout.write(f"{item.flag.key}")
        for state in item.states:
            command.stdout.write(f"  {state.describe()}")
        command.stdout.write(f"  archive: {item.archive_command}")


def _archive(command: Any, options: dict) -> None:
    flag = services.flag_archive(
        actor=command._actor(options),
        flag=selectors.flag_get(options["flag"]),
        archived=not options["undo"],
    )
    command.stdout.write(
        f"{flag.key}: {'archived' if flag.archived else 'not archived'}"
    )


def _output(command: Any, name: str) -> Callable:
    """Return ``flag``'s table/print helper: ``table``/``print`` on commands
    built on controlplane's OutputCommand, ``_table``/``_print`` before."""
    helper = getattr(command, name, None)
    return helper if callable(helper) else getattr(command, f"_{name}")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


_HANDLERS: dict[str, Callable[[Any, dict], None]] = {
    "trigger_create": _trigger_create,
    "trigger_list": _trigger_list,
    "trigger_revoke": _trigger_revoke,
    "stale": _stale,
    "archive": _archive,
}
