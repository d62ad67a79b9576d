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


def _comparison_line(name: str, comparison: dict | None) -> str:
    if not comparison:
        return f"- {name}: no outcome events"
    return (
        f"- {name}: {_side('treatment', comparison['treatment'])}; "
        f"{_side('control', comparison['control'])}"
    )


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
            f"### Phase {phase['index']} ({phase['name']}, {phase['gate']}): {decision}"
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
            out.append(
                f"| {_cell(name)} | **{e['answer'] or 'no data'}** | "
                f"{metric_text(metric, e['estimate'])} | {interval} | {bound} | {size} | "
                f"{e['measurements']} ({a['worse']} / {a['not_worse']} / {a['not_yet']}) | "
                f"{'none (dry run)' if e['dry_run'] else e['decision'] or '-'} |"
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
        f"- Status: **{r['status']}** (phase {r['current_phase']})"
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
            f"| {p['index']} | {p['name']} | {p['target']} | {p['min_duration']} / "
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
        symbol = _SYMBOLS.get(c["comparator"], c["comparator"])
        rule = (
            f"value {symbol} {_fmt(c['threshold'])}"
            if c["mode"] == "absolute"
            else f"within {c['relative_tolerance']:.0%} of baseline {_fmt(c['baseline'])}"
            if c["mode"] == "relative"
            else f"treated merchants not worse than their baselines by more than the "
            f"margin {metric_text(c['metric'], c['margin'])} (always-valid, alpha "
            f"{_fmt(c['alpha'])})"
            if c["mode"] == "compare"
            else f"treatment not worse than control (alpha {_fmt(c['threshold'] or 0.05)})"
        )
        v = c["verdicts"]
        out += [
            f"### {c['name']} ({c['provider']}, {c['mode']}): {c['status']}"
            + (" (dry run)" if c.get("dry_run") else ""),
            "",
            f"Rule: {rule}; min samples {c['min_samples']}, failure limit "
            f"{c['failure_limit']}, inconclusive limit {c['inconclusive_limit']}, error limit "
            f"{c['consecutive_error_limit']}; on failure: {c['on_failure']}.",
            f"Measurements: {sum(v.values())} (pass {v['pass']}, fail {v['fail']}, "
            f"inconclusive {v['inconclusive']}, not yet {v.get('not_yet', 0)}, "
            f"error {v['error']}); values min "
            f"{_fmt(c['summary']['min'])}, max {_fmt(c['summary']['max'])}, mean "
            f"{_fmt(c['summary']['mean'])}.",
            "",
            "| phase | time | value | limit | verdict | answer | interval | why |",
            "|---|---|---|---|---|---|---|---|",
        ]
        runs = c["runs"]
        shown = runs[-MD_RUNS_PER_CHECK:]
        for run in shown:
            message = _cell(run["message"] or "")
            limit = run["limit"] if run["limit"] is not None else c["threshold"]
            interval = (
                f"{metric_text(run['metric'], run['lower'])} to "
                f"{metric_text(run['metric'], run['upper'])}"
                if run["lower"] is not None
                else "-"
            )
            out.append(
                f"| {run['phase']} | {run['measured_at']} | {_fmt(run['value'])} | "
                f"{symbol + ' ' + _fmt(limit) if limit is not None else '-'}"
                f" | {run['verdict']} | {run['answer']} | {interval} | {message} |"
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
                    f"phase {phase['phase']} ({phase['name']})", phase["comparison"]
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
