"""``manage.py checktemplate ...``: named, versioned check sets.

Thin: each subcommand parses its options, calls one service of
``canary.services.check_templates`` and prints the result. Mistakes
(unknown template, bad JSON, a bad check) end in a one-line CommandError.

    checktemplate list [--archived]
    checktemplate show NAME [--version N] [--format text|json]
    checktemplate create NAME --file F [--description D]
    checktemplate update NAME --file F [--description D]   (writes version N+1)
    checktemplate archive NAME [--version N]

``--file`` is a JSON file (``-`` reads standard input) holding a list of
checks, or an object ``{"description": ..., "checks": [...]}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from canary import services
from canary.models import CheckTemplate
from canary.services.check_templates import check_rule_text
from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand

CHECK_COLUMNS = (
    "check",
    "provider",
    "mode",
    "spec",
    "rule",
    "every",
    "on failure",
    "dry run",
)


def check_rows(checks: list[dict]) -> list[tuple[str, ...]]:
    """Return one row per check, in the order of ``CHECK_COLUMNS``."""
    return [
        (
            check["name"],
            check["provider"],
            check["mode"],
            json.dumps(check.get("spec") or {}, sort_keys=True),
            check_rule_text(check),
            f"{check['interval']}s",
            check["on_failure"],
            "yes" if check.get("dry_run") else "-",
        )
        for check in checks
    ]


class Command(OutputCommand):
    help = (
        "Check templates (named, versioned check sets rollouts reference with "
        "--check-template): list, show, create, update (a new version) and archive."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        listing = sub.add_parser("list", help="the latest version of each template")
        listing.add_argument(
            "--archived", action="store_true", help="include archived templates"
        )
        show = sub.add_parser("show", help="one template's checks")
        show.add_argument("name")
        show.add_argument("--version", type=int, help="default: the latest")
        show.add_argument("--format", choices=["text", "json"], default="text")
        for name, text in (
            ("create", "create version 1 of a template from a JSON file"),
            ("update", "write the next version of a template from a JSON file"),
        ):
            command = sub.add_parser(name, help=text)
            command.add_argument("name")
            command.add_argument(
                "--file",
                required=True,
                help="JSON: a list of checks, or {description, checks}; - for stdin",
            )
            command.add_argument("--description")
        archive = sub.add_parser(
            "archive", help="archive a version, or every version, of a template"
        )
        archive.add_argument("name")
        archive.add_argument("--version", type=int, help="default: every version")

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, "_" + options["subcommand"])
        try:
            handler(options)
        except DomainError as exc:
            raise CommandError(" ".join(exc.message.split())) from None

    def _read(self, path: str) -> tuple[list, str | None]:
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise CommandError(f"--file: cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"--file: not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        if isinstance(data, dict):
            unknown = set(data) - {"description", "checks"}
            if unknown:
                raise CommandError(
                    f"--file: unknown field {sorted(unknown)[0]!r} (allowed: "
                    "checks, description)"
                )
            return data.get("checks"), data.get("description")
        return data, None

    def _summary(self, template: CheckTemplate) -> str:
        tail = " (archived)" if template.archived else ""
        tail += " (built in)" if template.pk is None else ""
        count = len(template.checks)
        return (
            f"{template.reference}{tail}: {count} check{'s' if count != 1 else ''}"
            + (f" - {template.description}" if template.description else "")
        )

    def _checks(self, checks: list[dict]) -> None:
        self.rows(None, CHECK_COLUMNS, check_rows(checks), empty="no checks")

    def _list(self, options: dict) -> None:
        self.rows(
            None,
            ("template", "checks", "state", "description"),
            (
                (
                    template.reference,
                    len(template.checks),
                    "built in"
                    if template.pk is None
                    else "archived"
                    if template.archived
                    else "active",
                    template.description or "-",
                )
                for template in services.check_template_list(
                    include_archived=options["archived"]
                )
            ),
            empty="no check templates",
        )

    def _show(self, options: dict) -> None:
        template = services.check_template_get(options["name"], options["version"])
        if options["format"] == "json":
            self.stdout.write(
                json.dumps(
                    {
                        "name": template.name,
                        "version": template.version,
                        "description": template.description,
                        "archived": template.archived,
                        "checks": template.checks,
                    },
                    indent=2,
                )
            )
            return
        self.stdout.write(self._summary(template))
        self._checks(template.checks)
        others = [
            t.version
            for t in services.check_template_versions(template.name)
            if t.version != template.version
        ]
        if others:
            self.stdout.write(f"other versions: {', '.join(map(str, others))}")

    def _create(self, options: dict) -> None:
        checks, description = self._read(options["file"])
        template = services.check_template_create(
            actor=actor_for_cli(),
            name=options["name"],
            checks=checks,
            description=options["description"] or description or "",
        )
        self.stdout.write(f"created {self._summary(template)}")
        self._checks(template.checks)

    def _update(self, options: dict) -> None:
        checks, description = self._read(options["file"])
        before = services.check_template_versions(options["name"])[0]
        template = services.check_template_update(
            actor=actor_for_cli(),
            name=options["name"],
            checks=checks,
            description=options["description"]
            if options["description"] is not None
            else description,
        )
        if template.pk == before.pk:
            self.stdout.write(f"unchanged: {self._summary(template)}")
            return
        self.stdout.write(f"new version {self._summary(template)}")
        self._checks(template.checks)

    def _archive(self, options: dict) -> None:
        archived = services.check_template_archive(
            actor=actor_for_cli(), name=options["name"], version=options["version"]
        )
        if not archived:
            self.stdout.write("nothing to archive: already archived")
        for template in archived:
            self.stdout.write(f"archived {template.reference}")
