"""Every write of the rollback app: deployments, runs, steps."""

from rollback.services.deployments import deployment_mark_reverted, deployment_record
from rollback.services.runs import (
    flag_capture,
    rollback_run_queue,
    rollback_run_retry,
    rollback_run_start,
    rollback_runs_resume,
)
from rollback.services.steps import (
    Claim,
    rollback_step_claim,
    rollback_step_finish,
    rollback_step_heartbeat,
    rollback_step_process_started,
)

__all__ = [
    "Claim",
    "deployment_mark_reverted",
    "deployment_record",
    "flag_capture",
    "rollback_run_queue",
    "rollback_run_retry",
    "rollback_run_start",
    "rollback_runs_resume",
    "rollback_step_claim",
    "rollback_step_finish",
    "rollback_step_heartbeat",
    "rollback_step_process_started",
]
