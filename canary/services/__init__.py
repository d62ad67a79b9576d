"""Every write to rollouts, phases, health checks and check runs.

The controller, admin, commands and API change state only through these.
``rollout_transition`` is the only code that assigns a rollout's status.
"""

from canary.services.check_templates import (
    check_rule_text,
    check_template_archive,
    check_template_create,
    check_template_expand,
    check_template_get,
    check_template_list,
    check_template_parse,
    check_template_resolve,
    check_template_update,
    check_template_versions,
)
from canary.services.checks import (
    SQL_CHECK_PERMISSION,
    check_judge,
    check_rules,
    check_run_record,
    check_state,
    checks_clean,
    checks_need_sql_permission,
    checks_reset,
    rollout_check_summary,
    rollout_gate,
    rollout_is_approved,
)
from canary.services.definitions import phases_clean
from canary.services.flag_moves import phase_apply
from canary.services.operator import *  # noqa: F401,F403 (preflight, draft checks)
from canary.services.rollbacks import (
    rollout_begin_rollback,
    rollout_escalate,
    rollout_fail_phase,
    rollout_phase_elapsed,
    rollout_restore_flag,
    rollout_rollback,
    rollout_rollback_finished,
    rollout_rollback_runs,
)
from canary.services.rollout_baselines import rollout_set_baseline
from canary.services.rollout_moves import (
    rollout_abort,
    rollout_approve,
    rollout_pause,
    rollout_resume,
)
from canary.services.rollouts import (
    rollout_advance,
    rollout_create,
    rollout_start,
    rollout_transition,
)
from canary.services.templates import (
    rollout_create_from_template,
    template_list,
    template_phases,
)
from canary.services.verification import (
    rollout_escalation_stop,
    rollout_verification_conclude,
    rollout_verification_escalate,
    verification_open,
)

__all__ = [
    "SQL_CHECK_PERMISSION",
    "check_judge",
    "check_rule_text",
    "check_template_archive",
    "check_template_create",
    "check_template_expand",
    "check_template_get",
    "check_template_list",
    "check_template_parse",
    "check_template_resolve",
    "check_template_update",
    "check_template_versions",
    "check_rules",
    "check_run_record",
    "check_state",
    "checks_clean",
    "checks_need_sql_permission",
    "checks_reset",
    "phase_apply",
    "phases_clean",
    "rollout_abort",
    "rollout_advance",
    "rollout_approve",
    "rollout_begin_rollback",
    "rollout_check_summary",
    "rollout_create",
    "rollout_create_from_template",
    "rollout_escalate",
    "rollout_escalation_stop",
    "rollout_fail_phase",
    "rollout_gate",
    "rollout_is_approved",
    "rollout_pause",
    "rollout_phase_elapsed",
    "rollout_restore_flag",
    "rollout_resume",
    "rollout_rollback",
    "rollout_rollback_finished",
    "rollout_rollback_runs",
    "rollout_set_baseline",
    "rollout_start",
    "rollout_transition",
    "rollout_verification_conclude",
    "rollout_verification_escalate",
    "template_list",
    "template_phases",
    "verification_open",
]
