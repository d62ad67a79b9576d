"""The rollout report in the admin: an HTML page, and Markdown and JSON
downloads of the same ``canary.report.report_build`` data."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from canary.models import Rollout


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _phase_view(phase: dict) -> dict:
    return {**phase, "number": phase["index"] + 1}


def report_context(report: dict) -> dict:
    """Return the report with what the template shows beside it: 1-based
    phase numbers, the phases' names by index, per check its runs newest
    first (``canary.report.MD_RUNS_PER_CHECK`` of them)."""
    from canary.report import MD_RUNS_PER_CHECK
    from canary.report_text import (
        check_limits,
        check_measurements,
        check_rule,
        comparison_text,
        evidence_cells,
        run_cells,
    )

    names = {p["index"]: p["name"] for p in report["phases"]}
    checks = []
    for check in report["checks"]:
        runs = [
            {
                **run,
                **run_cells(run, check),
                "number": run["phase"] + 1,
                "phase_name": names.get(run["phase"]),
                "measured": _time(run["measured_at"]),
            }
            for run in check["runs"]
        ]
        checks.append(
            {
                **check,
                "rule_text": check_rule(check),
                "limits_text": check_limits(check),
                "measurements_text": check_measurements(check),
                "shown_runs": list(reversed(runs[-MD_RUNS_PER_CHECK:])),
                "hidden_runs": max(0, len(runs) - MD_RUNS_PER_CHECK),
            }
        )
    evidence = [
        {
            **_phase_view(phase),
            "decided": _time(phase["decided_at"]),
            "rows": [{**e, "cells": evidence_cells(e)} for e in phase["checks"]],
        }
        for phase in report["evidence"]
        if phase["reached"]
    ]
    cohorts = report["cohorts"]
    r = report["rollout"]
    return {
        "report": report,
        "phase_count": len(report["phases"]),
        "current_number": r["current_phase"] + 1,
        "generated": _time(report["generated_at"]),
        "started": _time(r["started_at"]),
        "finished": _time(r["finished_at"]),
        "phases": [
            {
                **_phase_view(p),
                "started": _time(p["started_at"]),
                "ended": _time(p["ended_at"]),
            }
            for p in report["phases"]
        ],
        "evidence": evidence,
        "checks": checks,
        "cohort_overall": comparison_text(cohorts.get("overall"))
        if cohorts.get("overall")
        else "",
        "cohort_phases": [
            {**p, "number": p["phase"] + 1, "text": comparison_text(p["comparison"])}
            for p in cohorts.get("phases", [])
        ],
        "rollbacks": [
            {**run, "created": _time(run["created_at"])} for run in report["rollbacks"]
        ],
        "decisions": [{**d, "when": _time(d["at"])} for d in report["decisions"]],
    }


class ReportViewsMixin:
    """URLs and views of a rollout's report for ``RolloutAdmin``."""

    def report_urls(self) -> list:
        info = self.model._meta.app_label, self.model._meta.model_name
        view = self.admin_site.admin_view
        return [
            path(
                "<int:object_id>/report/",
                view(self.report_view),
                name="{}_{}_report".format(*info),
            ),
            path(
                "<int:object_id>/report.md",
                view(self.report_markdown_view),
                name="{}_{}_report_md".format(*info),
            ),
            path(
                "<int:object_id>/report.json",
                view(self.report_json_view),
                name="{}_{}_report_json".format(*info),
            ),
        ]

    def _report_of(self, request: HttpRequest, object_id: int) -> tuple:
        from canary.report import report_build

        rollout = get_object_or_404(Rollout, pk=object_id)
        if not self.has_view_permission(request, rollout):
            raise PermissionDenied
        return rollout, report_build(rollout)

    def report_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The report (``canary.report``) with its verdict, as HTML."""
        rollout, report = self._report_of(request, object_id)
        context = {
            **self.admin_site.each_context(request),
            **report_context(report),
            "title": f"Report: rollout {rollout.pk}",
            "opts": self.model._meta,
            "original": rollout,
            "markdown_url": reverse(
                "admin:canary_rollout_report_md", args=[rollout.pk]
            ),
            "json_url": reverse("admin:canary_rollout_report_json", args=[rollout.pk]),
        }
        return TemplateResponse(request, "admin/canary/rollout/report.html", context)

    def report_markdown_view(
        self, request: HttpRequest, object_id: int
    ) -> HttpResponse:
        """The report as a Markdown download."""
        from canary.report_text import report_markdown

        rollout, report = self._report_of(request, object_id)
        response = HttpResponse(
            report_markdown(report), content_type="text/markdown; charset=utf-8"
        )
        response["Content-Disposition"] = (
            f'attachment; filename="rollout-{rollout.pk}-report.md"'
        )
        return response

    def report_json_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The report as a JSON download."""
        from canary.report_text import report_json

        rollout, report = self._report_of(request, object_id)
        response = HttpResponse(report_json(report), content_type="application/json")
        response["Content-Disposition"] = (
            f'attachment; filename="rollout-{rollout.pk}-report.json"'
        )
        return response
