"""``manage.py release ...``: several flags through one plan together.

Thin: each subcommand parses its options, calls one release service (or a
release selector) and prints the result. Mistakes (unknown release or
flag, fewer than two flags, a refused move) end in a one-line
CommandError. The member rollouts keep their own command (``rollout``).

    release list [--status S] [--env E] [--limit N]
    release show ID
    release create --env E --flag K --flag K [...] (--template T | --phases JSON)
                   [--pilot M ...] [--duration-scale X] [--name N]
                   [--check JSON ...] [--check-template NAME[@VERSION]]
    release start|resume|approve ID [--reason R]
    release pause|abort ID --reason R
    release report ID
    release watch ID [--timeout S] [--interval S]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from canary.management.commands._rollout_args import json_object, positive
from canary.models import Release, ReleaseStatus
from canary.release_selectors import (
    estimate_text,
    release_estimates_now,
    release_list,
    release_member_rows,
    release_with_counts,
)
from canary.services import releases as release_services
from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand
from flags.changes import gate


def json_list(raw: str) -> list:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg} at {exc.pos})"
        ) from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("must be a JSON list")
    return value


def _when(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _phase(member: Any) -> str:
    # Numbered from 1, as everywhere a person reads them.
    text = f"{member.current_phase + 1} of {member.phase_count or 0}"
    return f"{text} ({member.phase_name})" if member.phase_name else text


class Command(OutputCommand):
    help = (
        "Releases (several flags through one plan together): list, show, create,"
        " start (after every member's preflight), pause, resume, approve, abort"
        " and report (members, deployed, rolled back with reasons, estimates)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        listing = sub.add_parser("list", help="list releases, newest first")
        listing.add_argument("--status", choices=ReleaseStatus.values)
        listing.add_argument("--env")
        listing.add_argument("--limit", type=int, default=20)
        create = sub.add_parser(
            "create", help="create a draft release: one draft rollout per flag"
        )
        create.add_argument("--env", default="production")
        create.add_argument(
            "--flag",
            action="append",
            default=[],
            help="a flag key, or KEY=TREATMENT (repeat: at least two)",
        )
        plan = create.add_mutually_exclusive_group(required=True)
        plan.add_argument("--template", help="plan name (see `rollout templates`)")
        plan.add_argument("--phases", type=json_list, help="the phases as a JSON list")
        create.add_argument(
            "--pilot",
            action="append",
            default=[],
            help="pilot merchant key (repeat, or comma-separated)",
        )
        create.add_argument(
            "--duration-scale",
            type=positive,
            help="multiply every phase duration (0.05 turns minutes into seconds)",
        )
        create.add_argument("--name")
        create.add_argument(
            "--check",
            action="append",
            type=json_object,
            default=[],
            help="health check as JSON, for every member (repeat; none: the "
            "default check set)",
        )
        create.add_argument(
            "--check-template", help="a check template, NAME or NAME@VERSION"
        )
        for name, text, reason_required in (
            ("show", "show a release and its members", None),
            ("report", "members, deployed, rolled back, estimates", None),
            ("start", "run every member's preflight and start them", False),
            ("resume", "resume every paused member", False),
            ("approve", "approve the current phase of every member", False),
            ("pause", "pause every running member (checks keep running)", True),
            ("abort", "abort every member: each flag back as captured", True),
        ):
            command = sub.add_parser(name, help=text)
            command.add_argument("id")
            if reason_required is not None:
                command.add_argument("--reason", required=reason_required, default="")

        watch = sub.add_parser(
            "watch",
            help="print each change of the release and its members until it ends",
        )
        watch.add_argument("id")
        watch.add_argument("--timeout", type=positive, default=3600.0)
        watch.add_argument("--interval", type=positive, default=1.0)

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, "_" + options["subcommand"].replace("-", "_"))
        try:
            handler(options)
        except DomainError as exc:
            raise CommandError(" ".join(exc.message.split())) from None

    # -- subcommands ----------------------------------------------------------

    def _list(self, options: dict) -> None:
        releases = release_list(status=options["status"], environment=options["env"])
        self.rows(
            None,
            (
                "id",
                "status",
                "environment",
                "members",
                "deployed",
                "rolled back",
                "started",
                "name",
            ),
            (
                (
                    r.pk,
                    r.status,
                    r.environment.key,
                    r.member_count,
                    r.deployed_count,
                    r.rolled_back_count,
                    _when(r.started_at),
                    r.name,
                )
                for r in releases[: max(1, options["limit"])]
            ),
            empty="no releases",
        )

    def _create(self, options: dict) -> None:
        from flags.selectors import environment_get

        flags: list[Any] = []
        for raw in options["flag"]:
            key, _, treatment = raw.partition("=")
            flags.append(
                {"flag": key.strip(), "treatment": treatment.strip()}
                if treatment.strip()
                else key.strip()
            )
        pilots = [
            key.strip()
            for raw in options["pilot"]
            for key in raw.split(",")
            if key.strip()
        ]
        if options["phases"] is not None and (pilots or options["duration_scale"]):
            raise CommandError("--pilot and --duration-scale need --template")
        release = release_services.release_create(
            actor=actor_for_cli(),
            environment=environment_get(options["env"]),
            flags=flags,
            template=options["template"] or "",
            phases=options["phases"],
            name=options["name"],
            pilot_merchants=pilots or None,
            duration_scale=options["duration_scale"],
            checks=options["check"] or None,
            check_template=options["check_template"],
        )
        self.stdout.write(f"release {release.pk} created (draft): {release.name}")
        self._members(release)
        self.stdout.write(f"start it with: manage.py release start {release.pk}")

    def _show(self, options: dict) -> None:
        release = release_with_counts(release_services.release_get(options["id"]))
        self._header(release)
        self._members(release)

    def _start(self, options: dict) -> None:
        from canary.services import PreflightFailed

        release = release_services.release_get(options["id"])
        actor = actor_for_cli()
        try:
            outcome = gate.submit(  # four-eyes may turn it into a change request
                actor=actor,
                operation="release.start",
                arguments={"release": release.pk, "reason": options["reason"]},
                apply=lambda: release_services.release_start(
                    release_id=release.pk, actor=actor, reason=options["reason"]
                ),
            )
        except PreflightFailed as exc:
            for warning in exc.report.warnings:
                self.stderr.write(f"warning: {warning}")
            raise CommandError(" ".join(exc.message.split())) from None
        if outcome.is_pending:
            self.stdout.write(gate.pending_message(outcome.change_request))
            return
        self._moved(outcome.result, "started")

    def _pause(self, options: dict) -> None:
        self._moved(
            release_services.release_pause(
                release_id=release_services.release_get(options["id"]).pk,
                actor=actor_for_cli(),
                reason=options["reason"],
            ),
            "paused",
        )

    def _resume(self, options: dict) -> None:
        self._moved(
            release_services.release_resume(
                release_id=release_services.release_get(options["id"]).pk,
                actor=actor_for_cli(),
                reason=options["reason"],
            ),
            "resumed",
        )

    def _approve(self, options: dict) -> None:
        self._moved(
            release_services.release_approve(
                release_id=release_services.release_get(options["id"]).pk,
                actor=actor_for_cli(),
                reason=options["reason"],
            ),
            "approved",
        )

    def _abort(self, options: dict) -> None:
        self._moved(
            release_services.release_abort(
                release_id=release_services.release_get(options["id"]).pk,
                actor=actor_for_cli(),
                reason=options["reason"],
            ),
            "abort requested",
        )

    def _report(self, options: dict) -> None:
        release = release_with_counts(release_services.release_get(options["id"]))
        summary = release.summary or {}
        self._header(release)
        self._members(release)
        deployed = summary.get("deployed")
        if deployed is not None:
            self.stdout.write(f"deployed: {', '.join(deployed) or 'none'}")
        rolled = self.table("Rolled back", "flag", "phase", "scope", "reason")
        for item in summary.get("rolled_back") or []:
            rolled.add_row(
                item.get("flag", ""),
                "-" if item.get("phase") is None else str(item["phase"] + 1),
                item.get("scope", ""),
                item.get("reason") or "-",
            )
        if rolled.row_count:
            self.print(rolled)
        else:
            self.stdout.write("rolled back: none")
        estimates = self.table(
            "Estimates",
            "flag",
            "check",
            "phase",
            "estimate",
            "interval",
            "margin",
            "decision",
        )
        for flag, checks in release_estimates_now(release).items():
            for check, row in checks.items():
                estimates.add_row(
                    flag,
                    check,
                    "-" if row.get("phase") is None else str(row["phase"] + 1),
                    estimate_text(row, "estimate"),
                    f"{estimate_text(row, 'lower')} .. {estimate_text(row, 'upper')}",
                    estimate_text(row, "margin"),
                    (row.get("decision") or "-").replace("_", " "),
                )
        if estimates.row_count:
            self.print(estimates)
        else:
            self.stdout.write("estimates: none (no compare check has measured yet)")

    def _watch(self, options: dict) -> None:
        release = release_services.release_get(options["id"])
        deadline = time.monotonic() + options["timeout"]
        last: tuple | None = None
        while True:
            release.refresh_from_db()
            members = release_member_rows(release)
            seen = (
                release.status,
                tuple((m.status, m.current_phase) for m in members),
            )
            if seen != last:
                self._moved(release, "is")
                last = seen
            if release.is_terminal:
                break
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"watch timed out after {options['timeout']:g}s: release "
                    f"{release.pk} is {release.status}"
                )
            time.sleep(options["interval"])
        self._report({"id": release.pk})

    # -- output ---------------------------------------------------------------

    def _header(self, release: Release) -> None:
        self.stdout.write(
            f"release {release.pk} {release.status}: {release.name} in "
            f"{release.environment.key}"
            + (f", plan {release.template}" if release.template else "")
        )
        self.stdout.write(
            f"members {release.member_count}, deployed {release.deployed_count}, "
            f"rolled back {release.rolled_back_count}; started "
            f"{_when(release.started_at)}, finished {_when(release.finished_at)}"
        )

    def _members(self, release: Release) -> None:
        self.rows(
            "Members",
            ("rollout", "flag", "status", "phase", "treatment"),
            (
                (m.pk, m.flag.key, m.status, _phase(m), m.treatment_variation)
                for m in release_member_rows(release)
            ),
            empty="no members",
        )

    def _moved(self, release: Release, verb: str) -> None:
        members = release_member_rows(release)
        self.stdout.write(
            f"release {release.pk} {verb}: {release.status}; "
            + ", ".join(f"{m.flag.key} {m.status}" for m in members)
        )
