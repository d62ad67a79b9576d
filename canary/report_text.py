"""The rollout report as text: JSON and Markdown.

``canary.report.report_build`` gathers the evidence and derives the verdict;
this module only renders what it returns.
"""

from __future__ import annotations

import json

from canary.report import (
    _SYMBOLS,
    MD_RUNS_PER_CHECK,
    _fmt,
    metric_text,
)


def report_json(report: dict) -> str:
    """Render the report as indented JSON."""
    return json.dumps(report, indent=2, default=str)


def _side(label: str, side: dict) -> str:
    rate = side.get("error_rate")
    return (
        f"{label} {side.get('n')} events from {side.get('merchants')} merchants, "
        f"{side.get('failures')} failed ({_fmt(rate * 100 if rate is not None else None)}%)"
    )


def comparison_text(comparison: dict | None) -> str:
    """Return the raw treatment and control totals of a cohort in words."""
    if not comparison:
        return "no outcome events"
    return (
        f"{_side('treatment', comparison['treatment'])}; "
        f"{_side('control', comparison['control'])}"
    )


def _comparison_line(name: str, comparison: dict | None) -> str:
    return f"- {name}: {comparison_text(comparison)}"


def phase_label(index: int, name: str = "") -> str:
    """Return a phase as people read it, 1-based: ``phase 2 (10%)``."""
    return f"phase {index + 1}" + (f" ({name})" if name else "")


def evidence_cells(e: dict) -> dict:
    """Return one check's evidence in a phase as table cells (text)."""
    name = e["check"] + (" (dry run)" if e["dry_run"] else "")
    metric = e["metric"]
    if e["rule"] == "threshold" or not metric:
        interval = "-"
        symbol = _SYMBOLS.get(e["comparator"], e["comparator"])
        bound = f"{symbol} {_fmt(e['threshold'])}"
        size = "-"
    else:
        interval = (
            f"{metric_text(metric, e['lower'])} to {metric_text(metric, e['upper'])}"
            if e["lower"] is not None
            else "-"
        )
        bound = f"margin {metric_text(metric, e['margin'])}"
        size = (
            f"{e['treated_merchants'] or 0} treated / {e['treated_events'] or 0} ev;"
            f" {e['control_merchants'] or 0} control / {e['control_events'] or 0} ev"
        )
    a = e["answers"]
    return {
        "name": name,
        "answer": e["answer"] or "no data",
        "estimate": metric_text(metric, e["estimate"]),
        "interval": interval,
        "bound": bound,
        "size": size,
        "measurements": (
            f"{e['measurements']} ({a['worse']} / {a['not_worse']} / {a['not_yet']})"
        ),
        "decision": "none (dry run)" if e["dry_run"] else e["decision"] or "-",
    }


def check_rule(c: dict) -> str:
    """Return a check's rule in words."""
    symbol = _SYMBOLS.get(c["comparator"], c["comparator"])
    if c["mode"] == "absolute":
        return f"value {symbol} {_fmt(c['threshold'])}"
    if c["mode"] == "relative":
        return f"within {c['relative_tolerance']:.0%} of baseline {_fmt(c['baseline'])}"
    if c["mode"] == "compare":
        return (
            "treated merchants not worse than their baselines by more than the "
            f"margin {metric_text(c['metric'], c['margin'])} (always-valid, alpha "
            f"{_fmt(c['alpha'])})"
        )
    return f"treatment not worse than control (alpha {_fmt(c['threshold'] or 0.05)})"


def check_limits(c: dict) -> str:
    """Return a check's sample minimum and limits in words."""
    return (
        f"min samples {c['min_samples']}, failure limit {c['failure_limit']}, "
        f"inconclusive limit {c['inconclusive_limit']}, error limit "
        f"{c['consecutive_error_limit']}; on failure: {c['on_failure']}"
    )


def check_measurements(c: dict) -> str:
    """Return a check's verdict counts and value summary in words."""
    v = c["verdicts"]
    return (
        f"{sum(v.values())} (pass {v['pass']}, fail {v['fail']}, "
        f"inconclusive {v['inconclusive']}, not yet {v.get('not_yet', 0)}, "
        f"error {v['error']}); values min "
        f"{_fmt(c['summary']['min'])}, max {_fmt(c['summary']['max'])}, mean "
        f"{_fmt(c['summary']['mean'])}"
    )


def run_cells(run: dict, c: dict) -> dict:
    """Return one check run's limit and interval as text."""
    symbol = _SYMBOLS.get(c["comparator"], c["comparator"])
    limit = run["limit"] if run["limit"] is not None else c["threshold"]
    interval = (
        f"{metric_text(run['metric'], run['lower'])} to "
        f"{metric_text(run['metric'], run['upper'])}"
        if run["lower"] is not None
        else "-"
    )
    return {
        "value": _fmt(run["value"]),
        "limit": f"{symbol} {_fmt(limit)}" if limit is not None else "-",
        "interval": interval,
    }


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _evidence_lines(report: dict) -> list[str]:
    """Per phase: the gate, the decision taken and, per check, the answer
    with its estimate, interval, margin or threshold and evidence."""
    out = ["## Evidence per phase", ""]
    reached = [p for p in report.get("evidence", []) if p["reached"]]
    if not reached:
        return out + ["No phase was reached.", ""]
    for phase in reached:
        decision = phase["decision"] or "-"
        out.append(
            f"### Phase {phase['index'] + 1} ({phase['name']}, {phase['gate']}): "
            f"{decision}"
        )
        out.append("")
        if phase["decided_at"]:
            out.append(
                f"Decision **{decision}** at {phase['decided_at']} by "
                f"{phase['decided_by']}: {phase['decision_reason'] or '-'}"
            )
            out.append("")
        if not phase["checks"]:
            out += ["No health checks.", ""]
            continue
        out += [
            "| check | answer | estimate | interval | margin / threshold | evidence |"
            " measurements (worse / not worse / not yet) | decision |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in phase["checks"]:
            cells = evidence_cells(e)
            out.append(
                f"| {_cell(cells['name'])} | **{cells['answer']}** | "
                f"{cells['estimate']} | {cells['interval']} | {cells['bound']} | "
                f"{cells['size']} | {cells['measurements']} | {cells['decision']} |"
            )
        notes = [
            f"- {e['check']}: {_cell(e['note'])}" for e in phase["checks"] if e["note"]
        ]
        out += ["", *notes, ""] if notes else [""]
    return out


def report_markdown(report: dict) -> str:
    """Render the report as Markdown for people."""
    r = report["rollout"]
    out = [
        f"# Rollout {r['id']}: {r['name']}",
        "",
        f"- Flag `{r['flag']}` in `{r['environment']}`, treatment `{r['treatment']}`, "
        f"control `{r['control']}`",
        f"- Status: **{r['status']}** (phase {r['current_phase'] + 1} of "
        f"{len(report['phases'])})"
        + (f", paused: {r['pause_reason']}" if r["pause_reason"] else ""),
        f"- Started {r['started_at'] or '-'}, finished {r['finished_at'] or '-'}, "
        f"duration {_fmt(r['duration_seconds'])} s",
        *(
            [f"- Checks from template `{r['check_template']}`"]
            if r.get("check_template")
            else []
        ),
        "",
        f"## Verdict: {report['verdict'].upper()}",
        "",
        *[f"- {reason}" for reason in report["reasons"]],
        *[f"- note: {note}" for note in report.get("notes", [])],
        "",
        "## Phases",
        "",
        "| # | phase | target | min / max s | approval | started | ended | took s | outcome |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        out.append(
            f"| {p['index'] + 1} | {p['name']} | {p['target']} | {p['min_duration']} / "
            f"{p['max_duration'] if p['max_duration'] is not None else '-'} | "
            f"{'yes' if p['requires_approval'] else 'no'} | {p['started_at'] or '-'} | "
            f"{p['ended_at'] or '-'} | {_fmt(p['duration_seconds'])} | {p['outcome']} |"
        )
    out += ["", *_evidence_lines(report)]
    detectable = report.get("detectable")
    if detectable and detectable.get("phases"):
        out += [
            "## What each phase could detect",
            "",
            "From the baselines captured at start; at 80% power (docs/canary.md).",
            "",
            *[f"- {phase['summary']}" for phase in detectable["phases"]],
            "",
        ]
    out += ["## Checks", ""]
    if not report["checks"]:
        out.append("No health checks.")
    elif any(c.get("dry_run") for c in report["checks"]):
        out += [
            "Checks marked (dry run) are measured and shown but never decide.",
            "",
        ]
    for c in report["checks"]:
        out += [
            f"### {c['name']} ({c['provider']}, {c['mode']}): {c['status']}"
            + (" (dry run)" if c.get("dry_run") else ""),
            "",
            f"Rule: {check_rule(c)}; {check_limits(c)}.",
            f"Measurements: {check_measurements(c)}.",
            "",
            "| phase | time | value | limit | verdict | answer | interval | why |",
            "|---|---|---|---|---|---|---|---|",
        ]
        runs = c["runs"]
        shown = runs[-MD_RUNS_PER_CHECK:]
        for run in shown:
            message = _cell(run["message"] or "")
            cells = run_cells(run, c)
            out.append(
                f"| {run['phase'] + 1} | {run['measured_at']} | {cells['value']} | "
                f"{cells['limit']} | {run['verdict']} | {run['answer']} | "
                f"{cells['interval']} | {message} |"
            )
        if len(runs) > len(shown):
            out.append(
                f"\n({len(runs) - len(shown)} earlier measurements in the JSON report.)"
            )
        out.append("")
    out += ["## Treatment vs control (context)", ""]
    cohorts = report["cohorts"]
    out += [f"These are {cohorts.get('note', 'raw totals')}.", ""]
    if cohorts["overall"] is None and not cohorts["phases"]:
        out.append("No outcome events.")
    else:
        out.append(_comparison_line("whole rollout", cohorts["overall"]))
        for phase in cohorts["phases"]:
            out.append(
                _comparison_line(
                    phase_label(phase["phase"], phase["name"]), phase["comparison"]
                )
            )
    out += ["", "## Rollback actions", ""]
    if not report["rollbacks"]:
        out.append("None.")
    for run in report["rollbacks"]:
        out.append(
            f"- Rollback run {run['id']}: level {run['level']}, **{run['status']}**, "
            f"by {run['actor']}: {run['reason']}"
        )
        for step in run["steps"]:
            tail = f" ({step['error']})" if step["error"] else ""
            out.append(
                f"  - step {step['position']} {step['actuator']} (level {step['level']}):"
                f" {step['status']} after {step['attempts']} attempt(s){tail}"
            )
    out += ["", "## Decisions", ""]
    for d in report["decisions"]:
        out.append(f"- {d['at']} `{d['action']}` by {d['actor']}: {d['explanation']}")
    out.append("")
    return "\n".join(out)
