"""Step 3 of a tick: judge one measurement and keep it as a CheckRun.

``record`` calls ``check_judge`` (pure) and ``check_run_record`` (one short
transaction), which moves the check's counters and audits a crossed limit.
"""

from __future__ import annotations

from canary import metrics
from canary.controller.measure import MeasureResult
from canary.models import HealthCheck
from canary.services import check_judge, check_run_record
from controlplane.audit.actors import CONTROLLER
from controlplane.exceptions import DomainError


def record(result: MeasureResult) -> str:
    """Judge one measurement and keep it as a CheckRun; return its verdict."""
    job = result.job
    check = (
        HealthCheck.objects.select_related("rollout").filter(pk=job.check_id).first()
    )
    if check is None:
        raise DomainError(f"health check {job.check_id} no longer exists")
    measurement = result.measurement
    if result.error is not None or measurement is None:
        judgement, detail = check_judge(
            check, value=None, error=result.error or "no result"
        )
        value = None
    else:
        judgement, detail = check_judge(
            check,
            value=measurement.value,
            samples=measurement.samples,
            cohorts=measurement.cohorts,
            merchants=measurement.merchants,
            comparison=(measurement.detail or {}).get("comparison_value"),
        )
        # A comparison records its estimate (the difference it decides on).
        value = detail.pop("recorded_value", measurement.value)
    detail["provider"] = job.provider
    detail["timeout"] = job.timeout
    if measurement is not None and measurement.detail:
        detail["measurement_detail"] = measurement.detail
    detail.update(job.detail)
    check_run_record(
        check_id=job.check_id,
        phase_index=job.phase_index,
        value=value,
        verdict=judgement.verdict,
        detail=detail,
        measured_at=result.measured_at,
        actor=CONTROLLER,
    )
    metrics.check_verdict_counted(job.provider, judgement.verdict)
    return judgement.verdict
