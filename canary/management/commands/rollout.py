"""``manage.py rollout ...``: create, start, steer, watch and report rollouts.

Thin: each subcommand parses its options, calls one service (or the
report builder) and prints the result. Mistakes (unknown rollout, refused
transition, bad JSON) end in a one-line CommandError.

    rollout list [--status S] [--flag F] [--env E]
    rollout create --flag F --env production --template pilot-10-50-100 --pilot m-1001
                   [--check JSON ...] [--duration-scale 0.05] [--name N]
    rollout start|status|approve|pause|resume|abort|fail-phase ID [--reason R]
    rollout rollback ID --level 1|2|3 --reason R
    rollout report ID [--format md|json]
    rollout watch ID [--timeout S] [--interval S]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from canary import services
from canary.models import Rollout, RolloutStatus
from canary.transitions import ACTIVE, TERMINAL
from controlplane.audit.actors import actor_for_cli
from flags.exceptions import DomainError

_SYMBOLS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "="}
# Statuses that end a watch: nothing more will happen by itself.
_WATCH_ENDS = TERMINAL


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _json_object(raw: str) -> dict:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class Snapshot:
    """What the watch shows at one moment (read from the database)."""

    rollout: Rollout
    phase_name: str
    phase_count: int
    elapsed: float
    remaining: float | None
    gate: list[str]
    checks: list[dict]
    now: dt.datetime = field(default_factory=timezone.now)
    # Rolling back, and the rollback run failed: nothing more happens by
    # itself (an operator must act), so a watch ends here too.
    rollback_failed: bool = False

    @property
    def is_over(self) -> bool:
        return self.rollout.status in _WATCH_ENDS or self.rollback_failed


def snapshot_take(rollout_id: int) -> Snapshot:
    """Read the rollout, its current phase, checks and gate now."""
    rollout = Rollout.objects.select_related("flag", "environment").get(pk=rollout_id)
    phases = list(rollout.phases.order_by("index"))
    phase = phases[rollout.current_phase] if phases else None
    now = timezone.now()
    elapsed = services.rollout_phase_elapsed(rollout, now)
    remaining = None
    gate: list[str] = []
    if phase is not None and rollout.status in ACTIVE and rollout.started_at:
        remaining = max(0.0, phase.min_duration - elapsed)
        gate = list(services.rollout_gate(rollout=rollout, now=now).reasons)
    checks = []
    for check in rollout.checks.order_by("id"):
        state = services.check_state(check, rollout.current_phase)
        checks.append({
            "name": check.name,
            "provider": check.provider,
            "mode": check.mode,
            "comparator": _SYMBOLS.get(check.comparator, check.comparator),
            "threshold": check.threshold,
            "value": check.last_value,
            "verdict": check.last_verdict or "-",
            "status": state.status,
            "passes": state.pass_count,
            "min_samples": check.min_samples,
            "last_run_at": check.last_run_at,
        })
    rollback_failed = False
    if rollout.status == RolloutStatus.ROLLING_BACK:
        from rollback.models import RollbackRun

        latest = (RollbackRun.objects.filter(trigger="rollout", trigger_ref=str(rollout.pk))
                  .order_by("-id").values_list("status", flat=True).first())
        rollback_failed = latest == "failed"
    return Snapshot(
        rollback_failed=rollback_failed,
        rollout=rollout, phase_name=phase.name if phase else "-",
        phase_count=len(phases), elapsed=elapsed, remaining=remaining, gate=gate,
        checks=checks, now=now,
    )


def _rule(check: dict) -> str:
    if check["mode"] == "absolute":
        return f"{check['comparator']} {_fmt(check['threshold'])}"
    if check["mode"] == "relative":
        return "vs baseline"
    return "vs control"


def snapshot_lines(snap: Snapshot) -> list[str]:
    """Return the snapshot as plain text lines (status, not a TTY)."""
    r = snap.rollout
    lines = [
        f"rollout {r.pk} {r.name!r}: {r.status}, phase {r.current_phase + 1}/{snap.phase_count}"
        f" ({snap.phase_name}), elapsed {_duration(snap.elapsed if r.started_at else None)}"
        f", remaining {_duration(snap.remaining)}",
    ]
    if r.pause_reason:
        lines.append(f"  paused: {r.pause_reason}")
    for check in snap.checks:
        lines.append(
            f"  check {check['name']} ({check['provider']}): last {_fmt(check['value'])} "
            f"{_rule(check)} -> {check['verdict']}; {check['status']}, "
            f"{check['passes']}/{check['min_samples']} passing"
        )
    for reason in snap.gate:
        lines.append(f"  waiting: {reason}")
    return lines


def snapshot_table(snap: Snapshot) -> Group:
    """Return the snapshot as a rich renderable (the live view)."""
    r = snap.rollout
    head = Text.assemble(
        (f"Rollout {r.pk} ", "bold"), f"{r.flag.key} in {r.environment.key}: ",
        (r.status, "bold green" if r.status in ("running", "completed") else "bold yellow"),
        f"\nphase {r.current_phase + 1}/{snap.phase_count} {snap.phase_name}",
        f"  elapsed {_duration(snap.elapsed if r.started_at else None)}",
        f"  remaining {_duration(snap.remaining)}",
    )
    table = Table(box=box.SIMPLE, expand=False)
    for column in ("check", "provider", "latest", "threshold", "verdict", "status", "passing"):
        table.add_column(column)
    for check in snap.checks:
        colour = {"pass": "green", "fail": "red", "error": "red"}.get(check["verdict"], "yellow")
        table.add_row(check["name"], check["provider"], _fmt(check["value"]), _rule(check),
                      Text(check["verdict"], style=colour), check["status"],
                      f"{check['passes']}/{check['min_samples']}")
    parts: list[Any] = [head, table]
    if r.pause_reason:
        parts.append(Text(f"paused: {r.pause_reason}", style="yellow"))
    parts.extend(Text(f"waiting: {reason}", style="dim") for reason in snap.gate)
    return Group(*parts)


class EventFeed:
    """Turn new audit events, verdict changes and rollback steps into lines."""

    def __init__(self, rollout_id: int) -> None:
        self.rollout_id = rollout_id
        self.last_event = 0
        self.verdicts: dict[str, str] = {}
        self.steps: dict[int, tuple[str, int]] = {}

    def _events(self) -> list[Any]:
        from django.db.models import Q

        from controlplane.audit.models import AuditEvent

        check_ids = [str(pk) for pk in Rollout.objects.get(pk=self.rollout_id)
                     .checks.values_list("pk", flat=True)]
        query = Q(target_type="canary.rollout", target_id=str(self.rollout_id)) | Q(
            target_type="canary.healthcheck", target_id__in=check_ids
        )
        return list(AuditEvent.objects.filter(query, id__gt=self.last_event).order_by("id"))

    def prime(self, snap: Snapshot, history: int = 10) -> list[str]:
        """Return the last ``history`` events; later calls return only new ones."""
        events = self._events()
        for check in snap.checks:
            self.verdicts[check["name"]] = check["verdict"]
        self._steps()  # remember the steps as they are
        if events:
            self.last_event = events[-1].pk
        return [self._event_line(e) for e in events[-history:]]

    def _event_line(self, event: Any) -> str:
        from canary.report import _explain

        when = timezone.localtime(event.created_at).strftime("%H:%M:%S")
        return f"{when} {event.action} ({event.actor_type}:{event.actor_name}): {_explain(event)}"

    def _steps(self) -> list[str]:
        from rollback.models import RollbackStep

        lines = []
        steps = RollbackStep.objects.filter(
            run__trigger="rollout", run__trigger_ref=str(self.rollout_id)
        ).order_by("run_id", "position")
        for step in steps:
            key = (step.status, step.attempts)
            if self.steps.get(step.pk) != key:
                self.steps[step.pk] = key
                tail = f": {step.error}" if step.error else ""
                lines.append(f"rollback run {step.run_id} step {step.position} {step.actuator}: "
                             f"{step.status} (attempt {step.attempts}){tail}")
        return lines

    def poll(self, snap: Snapshot) -> list[str]:
        """Return a line for everything that happened since the last poll."""
        lines = []
        events = self._events()
        if events:
            self.last_event = events[-1].pk
        lines.extend(self._event_line(e) for e in events)
        for check in snap.checks:
            before = self.verdicts.get(check["name"])
            if before is not None and before != check["verdict"]:
                lines.append(
                    f"{timezone.localtime(snap.now).strftime('%H:%M:%S')} check {check['name']}:"
                    f" {before} -> {check['verdict']} (value {_fmt(check['value'])}, "
                    f"rule {_rule(check)})"
                )
            self.verdicts[check["name"]] = check["verdict"]
        lines.extend(self._steps())
        return lines


class Command(BaseCommand):
    help = (
        "Canary rollouts: list, create (from a template), start (after a preflight), status,"
        " approve, pause, resume, abort, fail-phase, rollback, report (md|json) and a live"
        " watch."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        listing = sub.add_parser("list", help="list rollouts, newest first")
        listing.add_argument("--status", choices=RolloutStatus.values)
        listing.add_argument("--flag")
        listing.add_argument("--env")
        listing.add_argument("--limit", type=int, default=20)
        create = sub.add_parser("create", help="create a draft rollout from a template")
        create.add_argument("--flag", required=True)
        create.add_argument("--env", default="production")
        create.add_argument("--template", required=True,
                            help="plan name (see `rollout templates`)")
        create.add_argument("--pilot", action="append", default=[],
                            help="pilot merchant key (repeat, or comma-separated)")
        create.add_argument("--check", action="append", type=_json_object, default=[],
                            help='health check as JSON, e.g. \'{"name": "errors", "provider":'
                                 ' "outcomes", "spec": {"metric": "error_rate"},'
                                 ' "threshold": 0.05}\' (repeat)')
        create.add_argument("--name")
        create.add_argument("--duration-scale", type=_positive,
                            help="multiply every phase duration (0.05 turns minutes into"
                                 " seconds)")
        create.add_argument("--deployment", type=int, help="id of the deployment canaried")
        sub.add_parser("templates", help="list the named plans")
        for name, text in (
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
        rollback = sub.add_parser("rollback", help="roll back now at a level")
        rollback.add_argument("id")
        rollback.add_argument("--level", type=int, choices=[1, 2, 3], default=1)
        rollback.add_argument("--reason", default="")
        report = sub.add_parser("report", help="the report with a verdict")
        report.add_argument("id")
        report.add_argument("--format", choices=["md", "json"], default="md")
        watch = sub.add_parser("watch", help="follow a rollout live until it ends")
        watch.add_argument("id")
        watch.add_argument("--timeout", type=_positive, default=3600.0,
                           help="give up after this many seconds (default 3600)")
        watch.add_argument("--interval", type=_positive, default=1.0,
                           help="seconds between polls (default 1)")

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
        rows = list(rollouts[: max(1, options["limit"])])
        if not rows:
            self.stdout.write("no rollouts")
            return
        for r in rows:
            self.stdout.write(f"{r.pk:>5}  {r.status:<17} {r.flag.key} in {r.environment.key}"
                              f"  phase {r.current_phase}  {r.name}")

    def _templates(self, options: dict) -> None:
        for name, description in services.template_list().items():
            self.stdout.write(f"{name}: {description}")

    def _create(self, options: dict) -> None:
        from flags.selectors import environment_get, flag_get

        pilots = [key.strip() for raw in options["pilot"] for key in raw.split(",") if key.strip()]
        rollout = services.rollout_create_from_template(
            actor=actor_for_cli(),
            template=options["template"],
            flag=flag_get(options["flag"]),
            environment=environment_get(options["env"]),
            pilot_merchants=pilots,
            checks=options["check"],
            name=options["name"],
            deployment=options["deployment"],
            duration_scale=options["duration_scale"],
        )
        self.stdout.write(f"rollout {rollout.pk} created (draft): {rollout.name}")
        for phase in rollout.phases.order_by("index"):
            target = (f"{phase.percentage:g}%" if phase.percentage is not None
                      else ", ".join(phase.pilot_merchants))
            self.stdout.write(f"  phase {phase.index} {phase.name}: {target}, at least "
                              f"{phase.min_duration}s"
                              + (" (needs approval)" if phase.requires_approval else ""))
        for check in rollout.checks.order_by("id"):
            self.stdout.write(f"  check {check.name}: {check.provider} {check.mode} "
                              f"{_SYMBOLS.get(check.comparator)} {_fmt(check.threshold)}, "
                              f"on failure {check.on_failure}")
        self.stdout.write(f"start it with: manage.py rollout start {rollout.pk}")

    def _start(self, options: dict) -> None:
        try:
            rollout, report = services.rollout_start_checked(
                rollout_id=options["id"], actor=actor_for_cli(), reason=options["reason"]
            )
        except services.PreflightFailed as exc:
            for warning in exc.report.warnings:
                self.stderr.write(f"warning: {warning}")
            raise CommandError(exc.message) from None
        for check in report.checks:
            self.stdout.write(f"preflight: check {check['name']} answered "
                              f"{_fmt(check['value'])} ({check['samples'] or 0} samples)")
        for warning in report.warnings:
            self.stdout.write(f"preflight warning: {warning}")
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}: phase 0 "
                          f"({rollout.phases.get(index=0).name}) is live")

    def _status(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        for line in snapshot_lines(snapshot_take(rollout.pk)):
            self.stdout.write(line)

    def _approve(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_approve(rollout_id=rollout.pk, actor=actor_for_cli(),
                                           reason=options["reason"])
        self.stdout.write(f"rollout {rollout.pk} approved at phase {rollout.current_phase}: "
                          f"{rollout.status}")

    def _pause(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_pause(rollout_id=rollout.pk, actor=actor_for_cli(),
                                         reason=options["reason"] or "paused by an operator")
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}")

    def _resume(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_resume(rollout_id=rollout.pk, actor=actor_for_cli(),
                                          reason=options["reason"])
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}")

    def _abort(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_abort(rollout_id=rollout.pk, actor=actor_for_cli(),
                                         reason=options["reason"] or "aborted by an operator")
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}: flag state restored as "
                          "captured at start" if rollout.captured_state else
                          f"rollout {rollout.pk} {rollout.status}")

    def _fail_phase(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_fail_phase(
            rollout_id=rollout.pk, actor=actor_for_cli(),
            reason=options["reason"] or "phase failed by an operator",
        )
        self.stdout.write(f"rollout {rollout.pk} {rollout.status}")

    def _rollback(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        rollout = services.rollout_begin_rollback(
            rollout_id=rollout.pk, level=options["level"], actor=actor_for_cli(),
            reason=options["reason"] or "rolled back by an operator",
        )
        self.stdout.write(f"rollout {rollout.pk} {rollout.status} (level {options['level']})")

    def _report(self, options: dict) -> None:
        from canary.report import report_build, report_json, report_markdown

        report = report_build(services.rollout_get(options["id"]))
        render = report_json if options["format"] == "json" else report_markdown
        self.stdout.write(render(report))

    # -- watch ----------------------------------------------------------------

    def _watch(self, options: dict) -> None:
        rollout = services.rollout_get(options["id"])
        console = Console(file=self.stdout, highlight=False, soft_wrap=True)
        deadline = time.monotonic() + options["timeout"]
        snap = snapshot_take(rollout.pk)
        feed = EventFeed(rollout.pk)
        history = feed.prime(snap)
        timed_out = False
        if console.is_terminal:
            with Live(snapshot_table(snap), console=console, refresh_per_second=4,
                      transient=False) as live:
                for line in history:
                    live.console.print(line)
                while not snap.is_over:
                    if time.monotonic() >= deadline:
                        timed_out = True
                        break
                    time.sleep(options["interval"])
                    snap = snapshot_take(rollout.pk)
                    for line in feed.poll(snap):
                        live.console.print(line)
                    live.update(snapshot_table(snap))
        else:
            for line in history:
                self.stdout.write(line)
            for line in snapshot_lines(snap):
                self.stdout.write(line)
            shown = (snap.rollout.status, snap.rollout.current_phase)
            last_status = time.monotonic()
            while not snap.is_over:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                time.sleep(min(options["interval"], max(0.0, deadline - time.monotonic())))
                snap = snapshot_take(rollout.pk)
                lines = feed.poll(snap)
                for line in lines:
                    self.stdout.write(line)
                now_shown = (snap.rollout.status, snap.rollout.current_phase)
                # A status block when the phase or status moves, else every 15 s.
                if now_shown != shown or time.monotonic() - last_status >= 15:
                    for line in snapshot_lines(snap):
                        self.stdout.write(line)
                    shown, last_status = now_shown, time.monotonic()
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
            f"summary: rollout {r['id']} {r['status']} after {_duration(r['duration_seconds'])};"
            f" {passed}/{len(report['phases'])} phases passed; verdict: {report['verdict']}"
        )
        for reason in report["reasons"]:
            self.stdout.write(f"  - {reason}")
        for run in report["rollbacks"]:
            self.stdout.write(f"  rollback run {run['id']}: level {run['level']}, {run['status']}")
