"""Operator services: the preflight before start, and health checks of drafts.

``rollout_preflight`` answers "may this draft start?" without writing
anything: the flag has a state in the environment, every check's provider
answers once, and the rollback levels the checks ask for are possible.
``rollout_start_checked`` runs it and starts the rollout only when it
passes. The health-check functions add, change and remove checks of a
draft rollout (a started rollout's checks are fixed: its decisions must be
explainable by the checks it started with).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from canary import clock
from canary.exceptions import Conflict, InvalidInput, NotFound
from canary.models import CheckMode, HealthCheck, Rollout, RolloutStatus
from canary.services.definitions import CHECK_FIELDS, checks_clean
from canary.services.rollouts import rollout_start
from controlplane.audit.services import audited_transaction, record_audit_event
from flags.models import FlagState

# Look this far back when measuring a check before start (outcome events of
# the control cohort, a Prometheus range): the phase has not begun yet.
PREFLIGHT_LOOKBACK_SECONDS = 300
_LEVELS = {"rollback_1": 1, "rollback_2": 2, "rollback_3": 3}


class PreflightFailed(Conflict):
    """The preflight refused to start the rollout; ``report`` says why."""

    code = "preflight_failed"

    def __init__(self, report: PreflightReport) -> None:
        super().__init__(
            "preflight refused: " + "; ".join(report.problems), field="preflight"
        )
        self.report = report

    def as_dict(self) -> dict:
        data = super().as_dict()
        data["preflight"] = self.report.as_dict()
        return data


@dataclass
class PreflightReport:
    """What the preflight found. ``ok`` is False when ``problems`` is not
    empty; ``baseline`` holds the values measured for relative checks that
    had none (``rollout_start`` records them)."""

    rollout: int
    checks: list[dict] = field(default_factory=list)
    rollback: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    detectable: dict = field(default_factory=dict)
    # The merchant baselines the detectability read (not part of the
    # answer): a checked start keeps them instead of querying again.
    capture: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("capture", None)
        return {**data, "ok": self.ok}


def rollout_get(rollout_id: Any) -> Rollout:
    """Return the rollout with id ``rollout_id`` (an int or its text).

    Raise InvalidInput for something that is not an id, NotFound for an
    unknown one.
    """
    try:
        pk = int(str(rollout_id).strip())
    except ValueError:
        raise InvalidInput(
            f"rollout: {rollout_id!r} is not a rollout id", field="rollout"
        ) from None
    rollout = (
        Rollout.objects.select_related("flag", "environment", "deployment")
        .filter(pk=pk)
        .first()
    )
    if rollout is None:
        raise NotFound(f"unknown rollout {pk}", field="rollout")
    return rollout


def _measure(check: HealthCheck, rollout: Rollout, now: dt.datetime) -> dict:
    """Measure ``check`` once (no transaction open: providers may call out)."""
    from canary.providers import MeasureContext, ProviderError, get_provider

    ctx = MeasureContext(
        flag_key=rollout.flag.key,
        environment_key=rollout.environment.key,
        treatment_variation=rollout.treatment_variation,
        since=now
        - dt.timedelta(seconds=max(PREFLIGHT_LOOKBACK_SECONDS, check.interval)),
        until=now,
    )
    result: dict[str, Any] = {
        "name": check.name,
        "provider": check.provider,
        "value": None,
        "samples": None,
        "error": None,
    }
    try:
        measurement = get_provider(check.provider).measure(
            check.spec, ctx, timeout=check.timeout
        )
    except ProviderError as exc:
        result["error"] = exc.message
    except Exception as exc:  # a provider bug must refuse the start, not crash it
        result["error"] = f"{type(exc).__name__}: {exc}"
    else:
        result["value"] = measurement.value
        result["samples"] = measurement.samples
    return result


def rollout_preflight(
    *, rollout_id: Any, now: dt.datetime | None = None
) -> PreflightReport:
    """Return whether the draft ``rollout_id`` may start, and why not.

    Writes nothing. Problems: not a draft, the flag is archived or has no
    state in the environment, a check's provider fails (an error is a
    refusal; an answer without data is only a warning, since a canary
    often has no treatment traffic before it starts), a relative check
    with neither a recorded baseline nor a value to take as one, a
    rollback level a check asks for that the rollback preflight says is
    impossible. Warnings also say what each phase's compare checks can
    detect with the look-back traffic, and when that is too little
    (``canary.detectability``). Raise NotFound for an unknown rollout.
    """
    from canary.detectability import rollout_detectable
    from rollback.preflight import rollback_preflight

    rollout = rollout_get(rollout_id)
    report = PreflightReport(rollout=rollout.pk)
    now = now or clock.now()
    if rollout.status != RolloutStatus.DRAFT:
        report.problems.append(f"rollout {rollout.pk} is {rollout.status}, not draft")
        return report
    flag, environment = rollout.flag, rollout.environment
    if flag.archived:
        report.problems.append(f"flag {flag.key!r} is archived")
    if not FlagState.objects.filter(flag=flag, environment=environment).exists():
        report.problems.append(f"flag {flag.key!r} has no state in {environment.key!r}")
    checks = list(rollout.checks.order_by("id"))
    if not checks:
        report.warnings.append("no health checks: phases advance on time alone")
    for check in checks:
        result = _measure(check, rollout, now)
        report.checks.append(result)
        if result["error"] is not None and check.dry_run:
            # A dry-run check never decides: its failure cannot block a start.
            report.warnings.append(
                f"dry-run check {check.name} did not answer: {result['error']}"
            )
        elif result["error"] is not None:
            report.problems.append(
                f"check {check.name} did not answer: {result['error']}"
            )
        elif result["value"] is None:
            report.warnings.append(f"check {check.name} answered with no data yet")
        live = {"comparison_query", "comparison_column"} & set(check.spec or {})
        if (
            check.mode == CheckMode.RELATIVE
            and not live
            and check.name not in (rollout.baseline or {})
        ):
            if result["value"] is None:
                report.problems.append(
                    f"check {check.name} is relative to a baseline, and none is recorded "
                    "or measurable now"
                )
            else:
                report.baseline[check.name] = result["value"]
    report.detectable = rollout_detectable(rollout, now=now, keep_capture=True)
    report.capture = report.detectable.pop("capture", None)
    report.warnings.extend(report.detectable["warnings"])
    level = max((_LEVELS.get(c.on_failure, 0) for c in checks), default=1) or 1
    levels = tuple(range(1, level + 1))
    for number, outcome in rollback_preflight(
        deployment=rollout.deployment, levels=levels, flag=flag, environment=environment
    ).items():
        report.rollback[str(number)] = outcome
        for reason in outcome["reasons"]:
            report.problems.append(f"rollback level {number} impossible: {reason}")
        report.warnings.extend(
            f"rollback level {number}: {w}" for w in outcome["warnings"]
        )
    return report


def rollout_start_checked(
    *, rollout_id: Any, actor: Any, reason: str = ""
) -> tuple[Rollout, PreflightReport]:
    """Run the preflight, then start the rollout if it passed.

    A rollout already started (a repeated command) is returned unchanged
    with the report. Raise PreflightFailed (409, with the report) when the
    preflight refuses, and whatever ``rollout_start`` raises.
    """
    rollout = rollout_get(rollout_id)
    if rollout.status != RolloutStatus.DRAFT:
        # rollout_start decides: unchanged when running, refused when finished.
        return rollout_start(
            rollout_id=rollout.pk, actor=actor, reason=reason
        ), PreflightReport(rollout=rollout.pk)
    report = rollout_preflight(rollout_id=rollout.pk)
    if not report.ok:
        raise PreflightFailed(report)
    rollout = rollout_start(
        rollout_id=rollout.pk,
        actor=actor,
        reason=reason or "started after preflight",
        baseline=report.baseline or None,
        merchant_baseline=report.capture,
    )
    return rollout, report


# Health checks of a draft -----------------------------------------------


def _lock_draft(rollout_id: Any) -> Rollout:
    rollout = rollout_get(rollout_id)
    rollout = (
        Rollout.objects.select_for_update()
        .select_related("environment")
        .get(pk=rollout.pk)
    )
    if rollout.status != RolloutStatus.DRAFT:
        raise Conflict(
            f"rollout {rollout.pk} is {rollout.status}: checks can change only while it is a draft",
            field="status",
        )
    return rollout


def health_check_definition(check: HealthCheck) -> dict:
    """Return the definition of ``check`` in the shape ``checks_clean`` takes."""
    return {name: getattr(check, name) for name in CHECK_FIELDS}


def _clean_one(rollout: Rollout, raw: Any, *, exclude: int | None = None) -> dict:
    (check,) = checks_clean([raw])
    if rollout.checks.exclude(pk=exclude).filter(name=check["name"]).exists():
        raise InvalidInput(
            f"name: the rollout already has a check named {check['name']!r}",
            field="name",
        )
    if rollout.deployment_id is None and check["on_failure"] in (
        "rollback_2",
        "rollback_3",
    ):
        raise InvalidInput(
            f"on_failure: {check['on_failure']} reverts a deployment, and this rollout has none",
            field="on_failure",
        )
    return check


def _unprefixed(exc: InvalidInput) -> InvalidInput:
    """Turn ``checks[0].threshold`` errors into ``threshold`` errors."""
    if exc.field and exc.field.startswith("checks[0]"):
        field_name = exc.field.removeprefix("checks[0]").lstrip(".") or "check"
        message = exc.message.replace(exc.field, field_name, 1)
        return InvalidInput(message, field=field_name)
    return exc


def health_check_create(*, actor: Any, rollout_id: Any, check: Any) -> HealthCheck:
    """Add a health check to a draft rollout; writes ``check.created``.

    Raise InvalidInput (field-level) for a bad definition or a duplicate
    name, Conflict once the rollout has started, NotFound for an unknown
    rollout.
    """
    with audited_transaction():
        rollout = _lock_draft(rollout_id)
        try:
            clean = _clean_one(rollout, check)
        except InvalidInput as exc:
            raise _unprefixed(exc) from None
        row = HealthCheck.objects.create(rollout=rollout, **clean)
        rollout.version += 1
        rollout.save(update_fields=["version", "updated_at"])
        record_audit_event(
            actor=actor,
            action="check.created",
            target=row,
            environment=rollout.environment.key,
            after={"rollout": rollout.pk, **clean},
        )
    return row


def _check_of(rollout: Rollout, check_id: Any) -> HealthCheck:
    try:
        pk = int(str(check_id))
    except ValueError:
        raise InvalidInput(
            f"check: {check_id!r} is not a check id", field="check"
        ) from None
    row = rollout.checks.filter(pk=pk).first()
    if row is None:
        raise NotFound(f"rollout {rollout.pk} has no check {pk}", field="check")
    return row


def health_check_get(*, rollout_id: Any, check_id: Any) -> HealthCheck:
    """Return check ``check_id`` of rollout ``rollout_id``; raise NotFound."""
    return _check_of(rollout_get(rollout_id), check_id)


def health_check_update(
    *, actor: Any, rollout_id: Any, check_id: Any, changes: Any
) -> HealthCheck:
    """Change fields of a draft rollout's check; writes ``check.updated``.

    ``changes`` holds only the fields to change; the result is validated as
    a whole. No change: no event. Raise as ``health_check_create`` does.
    """
    if not isinstance(changes, dict):
        raise InvalidInput("send an object with the fields to change", field="check")
    with audited_transaction():
        rollout = _lock_draft(rollout_id)
        row = _check_of(rollout, check_id)
        before = health_check_definition(row)
        try:
            clean = _clean_one(rollout, {**before, **changes}, exclude=row.pk)
        except InvalidInput as exc:
            raise _unprefixed(exc) from None
        if clean == before:
            return row
        for name, value in clean.items():
            setattr(row, name, value)
        row.save()
        rollout.version += 1
        rollout.save(update_fields=["version", "updated_at"])
        record_audit_event(
            actor=actor,
            action="check.updated",
            target=row,
            environment=rollout.environment.key,
            before=before,
            after=clean,
            details={"rollout": rollout.pk},
        )
    return row


def health_check_delete(*, actor: Any, rollout_id: Any, check_id: Any) -> None:
    """Remove a check from a draft rollout; writes ``check.deleted``."""
    with audited_transaction():
        rollout = _lock_draft(rollout_id)
        row = _check_of(rollout, check_id)
        before = health_check_definition(row)
        record_audit_event(
            actor=actor,
            action="check.deleted",
            target=row,
            environment=rollout.environment.key,
            before=before,
            details={"rollout": rollout.pk},
        )
        row.delete()
        rollout.version += 1
        rollout.save(update_fields=["version", "updated_at"])


__all__ = [
    "PreflightFailed",
    "PreflightReport",
    "health_check_create",
    "health_check_definition",
    "health_check_delete",
    "health_check_get",
    "health_check_update",
    "rollout_get",
    "rollout_preflight",
    "rollout_start_checked",
]
