"""The rollout report as text: JSON and Markdown.

``canary.report.report_build`` gathers the evidence and derives the verdict;
this module only renders what it returns.
"""

from __future__ import annotations

import json

from canary.report import _SYMBOLS, MD_RUNS_PER_CHECK, _fmt


def report_json(report: dict) -> str:
    """Render the report as indented JSON."""
    return json.dumps(report, indent=2, default=str)


def _comparison_line(name: str, comparison: dict | None) -> str:
    if not comparison:
        return f"- {name}: no outcome events"
    if "error" in comparison:
        return f"- {name}: could not compare ({comparison['error']})"
    parts = []
    for metric in ("error_rate", "duration"):
        c = comparison[metric]
        confidence = (
            f", confidence treatment is worse {c['confidence'] * 100:.1f}%"
            if c.get("confidence") is not None
            else ""
        )
        parts.append(
            f"  - {metric.replace('_', ' ')}: **{c['verdict']}**{confidence}. "
            f"{c['explanation']}"
        )
    t, k = comparison["treatment"], comparison["control"]
    head = (
        f"- {name}: treatment n={t.get('n')} error rate {_fmt(t.get('error_rate'))} "
        f"p95 {_fmt(t.get('p95'))} ms; control n={k.get('n')} error rate "
        f"{_fmt(k.get('error_rate'))} p95 {_fmt(k.get('p95'))} ms"
    )
    return "\n".join([head, *parts])


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
    out += ["", "## Checks", ""]
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
            f"inconclusive {v['inconclusive']}, error {v['error']}); values min "
            f"{_fmt(c['summary']['min'])}, max {_fmt(c['summary']['max'])}, mean "
            f"{_fmt(c['summary']['mean'])}.",
            "",
            "| phase | time | value | limit | verdict | why |",
            "|---|---|---|---|---|---|",
        ]
        runs = c["runs"]
        shown = runs[-MD_RUNS_PER_CHECK:]
        for run in shown:
            message = (run["message"] or "").replace("|", "/")
            out.append(
                f"| {run['phase']} | {run['measured_at']} | {_fmt(run['value'])} | "
                f"{symbol} {_fmt(run['limit'] if run['limit'] is not None else c['threshold'])}"
                f" | {run['verdict']} | {message} |"
            )
        if len(runs) > len(shown):
            out.append(
                f"\n({len(runs) - len(shown)} earlier measurements in the JSON report.)"
            )
        out.append("")
    out += ["## Treatment vs control", ""]
    cohorts = report["cohorts"]
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
