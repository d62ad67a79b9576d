"""The canary controller: measure due checks, then move each rollout once.

One tick (``controller_tick``, in ``tick.py``) does four things, never
holding a row lock across a provider call:

1. **Claim** (``claim.py``, one short transaction): lock the rollouts in
   progress with ``select_for_update(skip_locked=True)``, pick their checks
   that are due (``next_due_at``), and push each one's ``next_due_at``
   forward by its timeout plus a grace period. That lease is what stops a
   second controller from measuring the same check meanwhile; the locks
   are released at commit.
2. **Measure** (``measure.py``) with no transaction open: network providers
   (http, prometheus) run in a thread pool, each bounded by the check's
   timeout; database providers (sql, outcomes) run in this thread, bounded
   by their own statement timeout.
3. **Record** (``record.py``) each measurement through ``check_run_record``
   (one short transaction each), which moves the check's counters and
   audits a crossed limit.
4. **Decide** (``decide.py``), one transaction per rollout: lock the row
   again (skipping it if another controller holds it), ask ``rollout_gate``
   what the phase needs, and apply at most one transition through the
   services. Every automatic decision carries its explanation
   (``explain.py``: which check, which measured value against which
   threshold, which limit) in the audit event details and, for a pause, in
   ``Rollout.pause_reason``. A rolling-back rollout is finished once its
   rollback run has ended (``rollbacks.py``).

Because each decision is recomputed under the row lock from the stored
state, and every service is keyed by what it expects (``expected_phase``,
the current status), two controllers ticking at once, or a redelivered
tick, never apply a transition twice.

``loop.py`` is the dev loop: ticks in a thread of this process when there
is no broker (``manage.py demo --serve``).
"""

from __future__ import annotations

from canary.controller.loop import (
    loop_is_running,
    loop_wake,
    run_loop,
    start_loop_thread,
    stop_loop_threads,
)
from canary.controller.tick import TickReport, controller_tick

__all__ = [
    "TickReport",
    "controller_tick",
    "loop_is_running",
    "loop_wake",
    "run_loop",
    "start_loop_thread",
    "stop_loop_threads",
]
