"""The report's verdict, derived from the controller's own evidence.

``verdict_derive`` reads the per-phase evidence of
``canary.report_evidence`` (the check runs' answers and the gate decisions
in the audit log) and nothing else: no second test. The rules are in
``canary.report``'s docstring and docs/canary.md ("The report and its
verdicts").
"""

from __future__ import annotations

from typing import Any

from canary.models import CheckStatus, Rollout, RolloutStatus
from canary.report_evidence import NOT_WORSE, WORSE
from controlplane.audit.models import AuditEvent

PROCEED, FIX_AND_RETEST, ROLL_BACK = "proceed", "fix and re-test", "roll back"
_SYMBOLS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "="}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def metric_text(metric: str | None, value: Any) -> str:
    """Return a comparison's value in its unit: error rate points, or the
    relative change of a latency quantile; a threshold value as is."""
    if value is None:
        return "-"
    if metric == "error_rate":
        return f"{value * 100:+.2f} pp"
    if metric:
        return f"{value * 100:+.1f}%"
    return _fmt(value)


def evidence_text(entry: dict) -> str:
    """Return one check's evidence in a phase in words: estimate, interval,
    margin (or threshold) and evidence size, as the controller saw it."""
    metric = entry.get("metric")
    if entry.get("rule") != "threshold" and metric:
        text = f"estimate {metric_text(metric, entry['estimate'])}"
        if entry.get("lower") is not None:
            text += (
                f", interval {metric_text(metric, entry['lower'])} to "
                f"{metric_text(metric, entry['upper'])}"
            )
        text += (
            f", margin {metric_text(metric, entry['margin'])}; "
            f"{entry.get('treated_merchants') or 0} treated merchants / "
            f"{entry.get('treated_events') or 0} events, "
            f"{entry.get('control_merchants') or 0} control / "
            f"{entry.get('control_events') or 0}"
        )
        return text
    symbol = _SYMBOLS.get(entry.get("comparator"), entry.get("comparator") or "")
    text = f"value {_fmt(entry.get('value'))}, threshold {symbol} {_fmt(entry.get('threshold'))}"
    return text + (f" ({entry['explanation']})" if entry.get("explanation") else "")


def _where(phase: dict) -> str:
    # People count phases from 1; the data keep the 0-based index.
    return f"phase {phase['index'] + 1} ({phase['name']})"


def verdict_derive(
    rollout: Rollout, checks: list[dict], evidence: list[dict], events: list[AuditEvent]
) -> tuple[str, list[str], list[str]]:
    """Return (verdict, reasons, notes) from the controller's answers and
    decisions; ``notes`` are what dry-run checks said (they never decide)."""
    back: list[str] = []
    fix: list[str] = []
    notes: list[str] = []
    if rollout.status in (RolloutStatus.ROLLING_BACK, RolloutStatus.ROLLED_BACK):
        why = next(
            (
                e
                for e in reversed(events)
                if e.action == "rollout.transition"
                and (e.details or {}).get("to") == RolloutStatus.ROLLING_BACK
            ),
            None,
        )
        reason = (why.details or {}).get("reason", "") if why else ""
        back.append(
            f"the rollout was rolled back at phase {rollout.current_phase + 1}"
            + (f": {reason}" if reason else "")
        )
    for phase in evidence:
        for entry in phase["checks"]:
            said_worse = WORSE in (entry["answer"], entry["latest_answer"])
            if entry["dry_run"]:
                if said_worse:
                    notes.append(
                        f"{_where(phase)}: dry-run check {entry['check']} said worse "
                        f"({evidence_text(entry)}); dry runs never decide"
                    )
                continue
            if said_worse:
                back.append(
                    f"{_where(phase)}: check {entry['check']} said worse: "
                    f"{evidence_text(entry)}"
                )
            elif (
                phase["left"]
                and phase["gate"] == "prove"
                and entry["answer"] != NOT_WORSE
            ):
                fix.append(
                    f"{_where(phase)} is a prove phase and was left ({phase['decision']}) "
                    f"while check {entry['check']} said {entry['answer'] or 'nothing'}, "
                    "not 'not worse': it should not have advanced, so nothing proves "
                    "the treatment not worse there"
                )
    notes += [
        f"check {check['name']} (dry run, not deciding): {check['status']}, "
        f"{check['verdicts']['pass']} pass / {check['verdicts']['fail']} fail"
        for check in checks
        if check["dry_run"]
    ]
    if back:
        return ROLL_BACK, back, notes
    for check in checks:
        if not check["dry_run"] and check["status"] in (
            CheckStatus.INCONCLUSIVE,
            CheckStatus.ERRORED,
        ):
            fix.append(
                f"check {check['name']} is {check['status']} (missing or erroring data "
                "is no evidence of health)"
            )
    if rollout.started_at is None:
        fix.append(
            f"the rollout never started (status {rollout.status}): nothing was measured"
        )
    elif rollout.status == RolloutStatus.ABORTED:
        fix.append("the rollout was aborted before its phases completed")
    elif rollout.status == RolloutStatus.PAUSED:
        fix.append(
            f"the rollout is paused: {rollout.pause_reason or 'no reason given'}"
        )
    if fix:
        return FIX_AND_RETEST, fix, notes
    reasons = []
    if rollout.status == RolloutStatus.COMPLETED:
        reasons.append(f"all {len(evidence)} phases completed")
    else:
        reasons.append(
            f"in progress ({rollout.status}, phase {rollout.current_phase + 1} of "
            f"{len(evidence)}): "
            "no check said worse so far"
        )
    deciding = [c for c in checks if not c["dry_run"]]
    if not deciding:
        reasons.append("no deciding checks: phases advanced on time alone")
    for phase in evidence:
        if not phase["left"] or not deciding:
            continue
        if phase["gate"] == "prove":
            proven = "; ".join(
                f"{e['check']} not worse ({evidence_text(e)})"
                for e in phase["checks"]
                if not e["dry_run"]
            )
            reasons.append(f"{_where(phase)}, prove: {proven}")
        else:
            reasons.append(
                f"{_where(phase)}, guard: left after its soak, no check said worse"
            )
    return PROCEED, reasons, notes
