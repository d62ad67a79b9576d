"""The views of ``manage.py rollout status|watch``: a snapshot of a rollout
read from the database, rendered as plain lines or a rich table, and a feed
of what happened since the last poll (audit events, verdict changes,
rollback steps). Read-only.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from canary import clock, services
from canary.models import Rollout, RolloutStatus
from canary.transitions import ACTIVE, TERMINAL
from controlplane.management.commands._output import console_for

SYMBOLS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "="}
# Statuses that end a watch: nothing more will happen by itself.
_WATCH_ENDS = TERMINAL


def value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def samples_text(passes: int, needed: int) -> str:
    """Return the passing samples toward the ``needed`` ones, e.g. ``1/2``.

    The phase counts every pass, but the gate needs only ``needed`` of
    them: past that the requirement is met, so the count stops there
    ("2/2", never "3/2").
    """
    return f"{min(passes, needed)}/{needed}"


def duration_text(seconds: float | None) -> str:
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
    now: dt.datetime = field(default_factory=clock.now)
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
    now = clock.now()
    elapsed = services.rollout_phase_elapsed(rollout, now)
    remaining = None
    gate: list[str] = []
    if phase is not None and rollout.status in ACTIVE and rollout.started_at:
        remaining = max(0.0, phase.min_duration - elapsed)
        gate = list(services.rollout_gate(rollout=rollout, now=now).reasons)
    checks = []
    for check in rollout.checks.order_by("id"):
        state = services.check_state(check, rollout.current_phase)
        checks.append(
            {
                "name": check.name,
                "provider": check.provider,
                "mode": check.mode,
                "comparator": SYMBOLS.get(check.comparator, check.comparator),
                "threshold": check.threshold,
                "value": check.last_value,
                "verdict": check.last_verdict or "-",
                "status": state.status,
                "passes": state.pass_count,
                "min_samples": check.min_samples,
                "last_run_at": check.last_run_at,
                "dry_run": check.dry_run,
            }
        )
    rollback_failed = False
    if rollout.status == RolloutStatus.ROLLING_BACK:
        from rollback.models import RollbackRun

        latest = (
            RollbackRun.objects.filter(trigger="rollout", trigger_ref=str(rollout.pk))
            .order_by("-id")
            .values_list("status", flat=True)
            .first()
        )
        rollback_failed = latest == "failed"
    return Snapshot(
        rollback_failed=rollback_failed,
        rollout=rollout,
        phase_name=phase.name if phase else "-",
        phase_count=len(phases),
        elapsed=elapsed,
        remaining=remaining,
        gate=gate,
        checks=checks,
        now=now,
    )


def _rule(check: dict) -> str:
    if check["mode"] == "absolute":
        return f"{check['comparator']} {value_text(check['threshold'])}"
    if check["mode"] == "relative":
        return "vs baseline"
    return "vs control"


def _dry(check: dict) -> str:
    # Dry-run checks are measured and shown, never decide: say so everywhere.
    return " (dry run)" if check.get("dry_run") else ""


def snapshot_lines(snap: Snapshot) -> list[str]:
    """Return the snapshot as plain text lines (status, not a TTY)."""
    r = snap.rollout
    lines = [
        f"rollout {r.pk} {r.name!r}: {r.status}, phase {r.current_phase + 1}/{snap.phase_count}"
        f" ({snap.phase_name}), elapsed {duration_text(snap.elapsed if r.started_at else None)}"
        f", remaining {duration_text(snap.remaining)}",
    ]
    if r.pause_reason:
        lines.append(f"  paused: {r.pause_reason}")
    if r.check_template:
        lines.append(f"  checks from template {r.check_template}")
    if r.verification_state:
        v = r.verification or {}
        lines.append(
            f"  verification after the rollback: {r.verification_state} at level "
            f"{v.get('level')}"
            + (f" until {v['until']}" if r.verification_state == "verifying" else "")
            + (f": {v['reason']}" if v.get("reason") else "")
            + ("" if r.auto_escalate else " (automatic escalation stopped)")
        )
    for check in snap.checks:
        lines.append(
            f"  check {check['name']}{_dry(check)} ({check['provider']}): last "
            f"{value_text(check['value'])} "
            f"{_rule(check)} -> {check['verdict']}; {check['status']}, "
            f"{samples_text(check['passes'], check['min_samples'])} passing samples"
        )
    for reason in snap.gate:
        lines.append(f"  waiting: {reason}")
    return lines


def snapshot_table(snap: Snapshot) -> Group:
    """Return the snapshot as a rich renderable (the live view)."""
    r = snap.rollout
    head = Text.assemble(
        (f"Rollout {r.pk} ", "bold"),
        f"{r.flag.key} in {r.environment.key}: ",
        (
            r.status,
            "bold green" if r.status in ("running", "completed") else "bold yellow",
        ),
        f"\nphase {r.current_phase + 1}/{snap.phase_count} {snap.phase_name}",
        f"  elapsed {duration_text(snap.elapsed if r.started_at else None)}",
        f"  remaining {duration_text(snap.remaining)}",
    )
    table = Table(box=box.SIMPLE, expand=False)
    for column in (
        "check",
        "provider",
        "latest",
        "threshold",
        "verdict",
        "status",
        "samples",
    ):
        table.add_column(column)
    for check in snap.checks:
        colour = {"pass": "green", "fail": "red", "error": "red"}.get(
            check["verdict"], "yellow"
        )
        table.add_row(
            check["name"] + _dry(check),
            check["provider"],
            value_text(check["value"]),
            _rule(check),
            Text(check["verdict"], style=colour),
            check["status"],
            samples_text(check["passes"], check["min_samples"]),
        )
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

        check_ids = [
            str(pk)
            for pk in Rollout.objects.get(pk=self.rollout_id).checks.values_list(
                "pk", flat=True
            )
        ]
        query = Q(target_type="canary.rollout", target_id=str(self.rollout_id)) | Q(
            target_type="canary.healthcheck", target_id__in=check_ids
        )
        return list(
            AuditEvent.objects.filter(query, id__gt=self.last_event).order_by("id")
        )

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
                lines.append(
                    f"rollback run {step.run_id} step {step.position} {step.actuator}: "
                    f"{step.status} (attempt {step.attempts}){tail}"
                )
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
                    f" {before} -> {check['verdict']} (value {value_text(check['value'])}, "
                    f"rule {_rule(check)})"
                )
            self.verdicts[check["name"]] = check["verdict"]
        lines.extend(self._steps())
        return lines


def follow(
    rollout_id: int,
    stdout: Any,
    *,
    interval: float,
    deadline: float,
    console: Console | None = None,
) -> tuple[Snapshot, bool]:
    """Show the rollout until it is over or ``deadline`` (monotonic) passes:
    a live table on a terminal, status blocks and the event feed otherwise.
    ``console`` (default: one for ``stdout``) decides colour and whether
    this is a terminal. Return the last snapshot and whether the deadline
    cut it short."""
    if console is None:
        console = console_for(stdout, soft_wrap=True)
    snap = snapshot_take(rollout_id)
    feed = EventFeed(rollout_id)
    history = feed.prime(snap)
    timed_out = False
    if console.is_terminal:
        with Live(
            snapshot_table(snap),
            console=console,
            refresh_per_second=4,
            transient=False,
        ) as live:
            for line in history:
                live.console.print(line)
            while not snap.is_over:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                time.sleep(interval)
                snap = snapshot_take(rollout_id)
                for line in feed.poll(snap):
                    live.console.print(line)
                live.update(snapshot_table(snap))
    else:
        for line in history:
            stdout.write(line)
        for line in snapshot_lines(snap):
            stdout.write(line)
        shown = (snap.rollout.status, snap.rollout.current_phase)
        last_status = time.monotonic()
        while not snap.is_over:
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            snap = snapshot_take(rollout_id)
            lines = feed.poll(snap)
            for line in lines:
                stdout.write(line)
            now_shown = (snap.rollout.status, snap.rollout.current_phase)
            # A status block when the phase or status moves, else every 15 s.
            if now_shown != shown or time.monotonic() - last_status >= 15:
                for line in snapshot_lines(snap):
                    stdout.write(line)
                shown, last_status = now_shown, time.monotonic()
    return snap, timed_out
