"""``manage.py rollout ...``: create, start, steer, watch and report rollouts.

Thin: each subcommand parses its options, calls one service (or the
report builder) and prints the result. Mistakes (unknown rollout, refused
transition, bad JSON) end in a one-line CommandError.

    rollout list [--status S] [--flag F] [--env E]
    rollout create --flag F --env production --template pilot-10-50-100 --pilot m-1001
                   [--check JSON ...] [--check-template NAME[@VERSION]]
                   [--duration-scale 0.05] [--name N]
    rollout baseline ID CHECK VALUE   (a draft's value before start, relative checks)
    rollout start|status|approve|pause|resume|abort|fail-phase ID [--reason R]
    rollout rollback ID --level 1|2|3 --reason R   (escalates a rolled-back one)
    rollout escalate ID --level 2|3 --reason R     (a rolled-back one only)
    rollout stop-escalation ID --reason R          (no automatic escalation)
    rollout report ID [--format md|json]
    rollout watch ID [--timeout S] [--interval S]
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Count

from canary import services
from canary.management.commands._rollout_args import json_object, positive
from canary.management.commands._rollout_watch import (
    duration_text,
    follow,
    snapshot_lines,
    snapshot_take,
    value_text,
)
from canary.models import Rollout, RolloutStatus
from canary.services.check_templates import check_rule_text
from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand
from flags.changes import gate


class Command(OutputCommand):
    help = (
        "Canary rollouts: list, create (from a template), start (after a preflight), status,"
        " approve, pause, resume, abort, fail-phase, rollback, escalate, stop-escalation,"
        " report (md|json) and a live watch."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        listing = sub.add_parser("list", help="list rollouts, newest first")
        listing.add_argument("--status", choices=RolloutStatus.values)
        listing.add_argument("--flag")
        listing.add_argument("--env")
        listing.add_argument("--limit", type=int, default=20)
        create = sub.add_parser("create", help="create a draft rollout from a template")
        create.add_argument("--flag", required=True)
        create.add_argument("--env", default="production")
        create.add_argument(
            "--template", required=True, help="plan name (see `rollout templates`)"
        )
        create.add_argument(
            "--pilot",
            action="append",
            default=[],
            help="pilot merchant key (repeat, or comma-separated)",
        )
        create.add_argument(
            "--check",
            action="append",
            type=json_object,
            default=[],
            help='health check as JSON, e.g. \'{"name": "errors", "provider":'
            ' "outcomes", "mode": "compare", "spec": {"metric": "error_rate"},'
            ' "margin": 0.01}\' (repeat; none: the default check set of'
            " docs/canary.md)",
        )
        create.add_argument(
            "--check-template",
            help="a check template, NAME or NAME@VERSION (see `checktemplate list`):"
            " its checks come before any --check",
        )
        create.add_argument("--name")
        create.add_argument(
            "--duration-scale",
            type=positive,
            help="multiply every phase duration (0.05 turns minutes into seconds)",
        )
        create.add_argument(
            "--deployment", type=int, help="id of the deployment canaried"
        )
        create.add_argument(
            "--max-level",
            type=int,
            choices=[1, 2, 3],
            default=3,
            help="highest rollback level the rollout may reach (default 3)",
        )
        sub.add_parser("templates", help="list the named plans")
        for name, text in (
            (
                "preflight",
                "run the preflight only: what may stop the start, what each phase can detect",
            ),
            ("start", "run the preflight and start a draft"),
            ("status", "show the phase, checks and what the gate waits for"),
            ("approve", "approve leaving the current phase"),
            ("pause", "pause (checks keep running)"),
            ("resume", "resume a paused rollout"),
            ("abort", "abort and put the flag back as captured at start"),
            ("fail-phase", "fail the current phase: its checks' on_failure acts"),
        ):
            command = sub.add_parser(name, help=text)
            command.add_argument("id")
            command.add_argument("--reason", default="")
        baseline = sub.add_parser(
            "baseline",
            help="record a draft's value before start for a relative check",
        )
        baseline.add_argument("id")
        baseline.add_argument("check", help="the check's name")
        baseline.add_argument("value", help="the value measured before start")
        rollback = sub.add_parser(
            "rollback",
            help="roll back now at a level, or escalate a rolled-back rollout to it",
        )
        rollback.add_argument("id")
        rollback.add_argument("--level", type=int, choices=[1, 2, 3], default=1)
        rollback.add_argument("--reason", default="")
        escalate = sub.add_parser(
            "escalate",
            help="escalate a rolled-back rollout's rollback to a higher level",
        )
        escalate.add_argument("id")
        escalate.add_argument("--level", type=int, choices=[1, 2, 3], required=True)
        escalate.add_argument("--reason", default="")
        stop = sub.add_parser(
            "stop-escalation",
            help="stop automatic escalation after a rollback (verification still "
            "measures; only an operator escalates)",
        )
        stop.add_argument("id")
        stop.add_argument("--reason", default="")
        report = sub.add_parser("report", help="the report with a verdict")
        report.add_argument("id")
        report.add_argument("--format", choices=["md", "json"], default="md")
        watch = sub.add_parser("watch", help="follow a rollout live until it ends")
        watch.add_argument("id")
        watch.add_argument(
            "--timeout",
            type=positive,
            default=3600.0,
            help="give up after this many seconds (default 3600)",
        )
        watch.add_argument(
            "--interval",
            type=positive,
            default=1.0,
            help="seconds between polls (default 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, "_" + options["subcommand"].replace("-", "_"))
        try:
            handler(options)
        except DomainError as exc:
            raise CommandError(" ".join(exc.message.split())) from None

    # -- subcommands ----------------------------------------------------------

    def _list(self, options: dict) -> None:
        rollouts = Rollout.objects.select_related("flag", "environment").order_by("-id")
        if options["status"]:
            rollouts = rollouts.filter(status=options["status"])
        if options["flag"]:
            rollouts = rollouts.filter(flag__key=options["flag"])
        if options["env"]:
            rollouts = rollouts.filter(environment__key=options["env"])
        rollouts = rollouts.annotate(phase_count=Count("phases"))
        self.rows(
            None,
            ("id", "status", "flag", "environment", "phase", "name"),
            (
                (
                    r.pk,
                    r.status,
                    r.flag.key,
                    r.environment.key,
                    # Numbered from 1, as everywhere a person reads them.
                    f"{r.current_phase + 1}/{r.phase_count}",
                    r.name,
                )
                for r in rollouts[: max(1, options["limit"])]
            ),
            empty="no rollouts",
        )

    def _templates(self, options: dict) -> None:
        self.rows(
            None,
            ("plan", "description"),
            services.template_list().items(),
            empty="no plans",
        )

    def _create(self, options: dict) -> None:
        from flags.selectors import environment_get, flag_get

        pilots = [
            key.strip()
            for raw in options["pilot"]
            for key in raw.split(",")
            if key.strip()
        ]
        rollout = services.rollout_create_from_template(
            actor=actor_for_cli(),
            template=options["template"],
            flag=flag_get(options["flag"]),
            environment=environment_get(options["env"]),
            pilot_merchants=pilots,
            checks=options["check"] or None,
            name=options["name"],
            deployment=options["deployment"],
            duration_scale=options["duration_scale"],
            max_level=options["max_level"],
            check_template=options["check_template"],
        )
        self.stdout.write(f"rollout {rollout.pk} created (draft): {rollout.name}")
        if rollout.check_template:
            self.stdout.write(f"checks from template {rollout.check_template}")
        phases = self.table("Phases", "phase", "name", "target", "at least", "approval")
        for phase in rollout.phases.order_by("index"):
            phases.add_row(
                str(phase.index + 1),
                phase.name,
                f"{phase.percentage:g}%"
                if phase.percentage is not None
                else ", ".join(phase.pilot_merchants),
                f"{phase.min_duration:g}s",
                "needed" if phase.requires_approval else "-",
            )
        checks = self.table(
            "Checks", "check", "provider", "mode", "rule", "on failure", "dry run"
        )
        for check in rollout.checks.order_by("id"):
            checks.add_row(
                check.name,
                check.provider,
                check.mode,
                check_rule_text(
                    {
                        field: getattr(check, field)
                        for field in (
                            "mode",
                            "comparator",
                            "threshold",
                            "relative_tolerance",
                            "margin",
                            "alpha",
                        )
                    }
                ),
                check.on_failure,
                "yes" if check.dry_run else "-",
            )
        self.print(phases, checks)
        self.stdout.write(f"start it with: manage.py rollout start {rollout.pk}")

    def _start(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        actor = actor_for_cli()
        try:
            outcome = gate.submit(  # four-eyes may turn it into a change request
                actor=actor,
                operation="rollout.start",
                arguments={"rollout": rollout.pk, "reason": options["reason"]},
                apply=lambda: services.rollout_start_checked(
                    rollout_id=rollout.pk, actor=actor, reason=options["reason"]
                ),
            )
        except services.PreflightFailed as exc:
            for warning in exc.report.warnings:
                self.stderr.write(f"warning: {warning}")
            raise CommandError(exc.message) from None
        if outcome.is_pending:
            self.stdout.write(gate.pending_message(outcome.change_request))
            return
        rollout, report = outcome.result
        self._preflight_lines(report)
        self.stdout.write(
            f"rollout {rollout.pk} {rollout.status}: phase 1 "
            f"({rollout.phases.get(index=0).name}) is live"
        )

    def _preflight_lines(self, report: Any) -> None:
        for check in report.checks:
            self.stdout.write(
                f"preflight: check {check['name']} answered "
                f"{value_text(check['value'])} ({check['samples'] or 0} samples)"
            )
        baseline = (report.detectable or {}).get("baseline")
        if baseline and baseline["merchants"]:
            self.stdout.write(
                f"preflight: look-back ({baseline['source']}, "
                f"{baseline['seconds'] / 3600:.3g} h): {baseline['merchants']} merchants "
                f"with traffic, {baseline['events']} events"
            )
        for phase in (report.detectable or {}).get("phases", []):
            self.stdout.write(f"preflight: {phase['summary']}")
        for warning in report.warnings:
            self.stdout.write(f"preflight warning: {warning}")

    def _preflight(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        report = services.rollout_preflight(rollout_id=rollout.pk)
        self._preflight_lines(report)
        if not report.ok:
            raise CommandError("preflight refuses: " + "; ".join(report.problems))
        self.stdout.write(f"preflight passed: rollout {rollout.pk} may start")

    def _status(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        for line in snapshot_lines(snapshot_take(rollout.pk)):
            self.stdout.write(line)

    def _approve(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_approve(
            rollout_id=rollout.pk, actor=actor_for_cli(), reason=options["reason"]
        )
        self.stdout.write(
            f"rollout {rollout.pk} approved at phase {rollout.current_phase + 1}: "
            f"{rollout.status}"
        )

    def _pause(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_pause(
            rollout_id=rollout.pk,
            actor=actor_for_cli(),
            reason=options["reason"] or "paused by an operator",
        )
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}")

    def _resume(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_resume(
            rollout_id=rollout.pk, actor=actor_for_cli(), reason=options["reason"]
        )
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}")

    def _abort(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_abort(
            rollout_id=rollout.pk,
            actor=actor_for_cli(),
            reason=options["reason"] or "aborted by an operator",
        )
        self.stdout.write(
            f"rollout {rollout.pk} {rollout.status}: flag state restored as "
            "captured at start"
            if rollout.captured_state
            else f"rollout {rollout.pk} {rollout.status}"
        )

    def _fail_phase(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_fail_phase(
            rollout_id=rollout.pk,
            actor=actor_for_cli(),
            reason=options["reason"] or "phase failed by an operator",
        )
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}")

    def _baseline(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        try:
            value = float(options["value"])
        except ValueError:
            raise CommandError(f"value: {options['value']!r} is not a number") from None
        rollout = services.rollout_set_baseline(
            rollout_id=rollout.pk,
            actor=actor_for_cli(),
            baseline={options["check"]: value},
        )
        self.stdout.write(
            f"rollout {rollout.pk}: baseline of check {options['check']} is "
            f"{value_text(rollout.baseline[options['check']])}"
        )

    def _rollback(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_rollback(
            rollout_id=rollout.pk,
            level=options["level"],
            actor=actor_for_cli(),
            reason=options["reason"] or "rolled back by an operator",
        )
        run = services.rollout_rollback_runs(rollout).last()
        self.stdout.write(
            f"rollout {rollout.pk} {rollout.status} (level {options['level']})"
            + (
                f": rollback run {run.pk} level {run.level}, {run.status}"
                if run
                else ""
            )
        )

    def _escalate(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        run = services.rollout_escalate(
            rollout_id=rollout.pk,
            level=options["level"],
            actor=actor_for_cli(),
            reason=options["reason"] or "escalated by an operator",
        )
        self.stdout.write(
            f"rollout {rollout.pk} escalated: rollback run {run.pk} level {run.level}, "
            f"{run.status}"
        )

    def _stop_escalation(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_escalation_stop(
            rollout_id=rollout.pk,
            actor=actor_for_cli(),
            reason=options["reason"] or "stopped by an operator",
        )
        state = rollout.verification_state or "no verification window"
        self.stdout.write(
            f"rollout {rollout.pk} {rollout.status}: automatic escalation stopped "
            f"({state})"
        )

    def _report(self, options: dict) -> None:
        from canary.report import report_build
        from canary.report_text import report_json, report_markdown

        report = report_build(services.rollout_get(options["id"]))
        render = report_json if options["format"] == "json" else report_markdown
        self.stdout.write(render(report))

    # -- watch ----------------------------------------------------------------

    def _watch(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        snap, timed_out = follow(
            rollout.pk,
            self.stdout,
            interval=options["interval"],
            deadline=time.monotonic() + options["timeout"],
            console=self.console(soft_wrap=True),
        )
        self._summary(snap.rollout.pk)
        if snap.rollback_failed:
            raise CommandError(
                f"the rollback of rollout {rollout.pk} failed: an operator must act "
                "(manage.py rollback status RUN, then retry)"
            )
        if timed_out:
            raise CommandError(
                f"watch timed out after {options['timeout']:g}s: rollout {rollout.pk} is "
                f"{snap.rollout.status}"
            )

    def _summary(self, rollout_id: int) -> None:
        from canary.report import report_build

        report = report_build(Rollout.objects.get(pk=rollout_id))
        r = report["rollout"]
        passed = sum(1 for p in report["phases"] if p["outcome"] == "passed")
        self.stdout.write(
            f"summary: rollout {r['id']} {r['status']} after {duration_text(r['duration_seconds'])};"
            f" {passed}/{len(report['phases'])} phases passed; verdict: {report['verdict']}"
        )
        for reason in report["reasons"]:
            self.stdout.write(f"  - {reason}")
        for run in report["rollbacks"]:
            self.stdout.write(
                f"  rollback run {run['id']}: level {run['level']}, {run['status']}"
            )
