"""The rollout page through Django's test client: its charts, the report as
HTML with Markdown and JSON downloads, coloured statuses, times with
seconds, 1-based phases, destructive actions marked and confirmed, and no
Save button on pages that are read-only."""

from __future__ import annotations

import json
import re

from canary import services
from canary.models import CheckRun, RolloutStatus
from controlplane.audit.actors import SYSTEM
from rollback.models import RollbackRun
from tests.canary_ui.conftest import record, run_to_completion

Status = RolloutStatus


def change_url(rollout) -> str:
    return f"/admin/canary/rollout/{rollout.pk}/change/"


def _started_with_runs(rollout_factory):
    rollout = rollout_factory(started=True)
    for value in (0.011, 0.022):
        record(rollout, "pass", value)
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=SYSTEM, reason="gates open"
    )
    record(rollout, "fail", 0.3, message="0.3 not < 0.05")
    return rollout


def test_rollout_page__runs__charts_inline_svg_without_script(
    admin_client, rollout_factory
):
    # Given
    rollout = _started_with_runs(rollout_factory)
    # When
    page = admin_client.get(change_url(rollout)).content.decode()
    # Then: a chart per check, the share and no comparison (no outcome events)
    charts = re.findall(r'<figure class="chart chart-(\w+)" id="([\w-]+)"', page)
    assert charts == [("check", "chart-check-0"), ("share", "chart-share")]
    figure = page[page.index('id="chart-check-0"') : page.index('id="chart-share"')]
    assert "<svg" in figure and "<script" not in figure
    assert not re.search(r'(?:href|src)="(?:https?:)?//', figure)
    # ... with every run's value and a marker for the advance
    runs = CheckRun.objects.filter(rollout=rollout)
    values = re.findall(r'<desc class="value">[^<]*: ([-\d.]+)</desc>', figure)
    for run in runs.exclude(value=None):
        assert f"{run.value:g}" in values
    assert "advance, phase 1: gates open" in figure


def test_rollout_page__draft__no_charts(admin_client, rollout_factory):
    # Given
    rollout = rollout_factory()
    # When
    page = admin_client.get(change_url(rollout)).content.decode()
    # Then
    assert 'id="rollout-charts"' not in page


def test_rollout_page__statuses_times_phases_and_danger_buttons(
    admin_client, rollout_factory
):
    # Given
    rollout = _started_with_runs(rollout_factory)
    # When
    page = admin_client.get(change_url(rollout)).content.decode()
    listing = admin_client.get("/admin/canary/rollout/").content.decode()
    # Then: coloured status and verdicts, times with seconds, 1-based phases
    assert '<span class="tone tone-ok">running</span>' in page
    assert '<span class="tone tone-bad">fail</span>' in page
    assert re.search(
        r'<time class="when" datetime="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d', page
    )
    assert "phase 2 of 4 (10%)" in page and "phase 2 of 4 (10%)" in listing
    assert '<span class="tone tone-ok">running</span>' in listing
    # ... abort, fail phase and roll back are danger buttons; pause is not
    assert re.search(r'class="rollout-action button danger">Abort<', page)
    assert re.search(r'class="rollout-action button danger">Roll back now<', page)
    assert re.search(r'class="rollout-action">Pause<', page)
    # ... and the page has nothing to save
    assert 'name="_save"' not in page


def test_abort_confirmation__danger_submit_with_confirm_text(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    # When
    abort = admin_client.get(
        f"/admin/canary/rollout/{rollout.pk}/do/abort/"
    ).content.decode()
    pause = admin_client.get(
        f"/admin/canary/rollout/{rollout.pk}/do/pause/"
    ).content.decode()
    # Then
    assert re.search(
        r'<input type="submit" class="default danger" value="Yes, abort" '
        rf'data-confirm="Abort: rollout {rollout.pk} \(ui test rollout\)\?',
        abort,
    )
    assert "phase 1 of 4" in abort
    assert "data-confirm" not in pause and "danger" not in pause


def test_report_page__html_with_tables_and_1_based_phases(
    admin_client, rollout_factory
):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    # When
    page = admin_client.get(
        f"/admin/canary/rollout/{rollout.pk}/report/"
    ).content.decode()
    # Then: rendered HTML (no Markdown markup), the verdict in green
    assert '<h2 id="report-verdict">Verdict: <span class="tone tone-ok">PROCEED' in page
    assert "<pre" not in page and "|---|" not in page and "## " not in page
    phases = page[page.index('id="report-phases"') :]
    phases = phases[: phases.index("</table>")]
    assert re.findall(r"<tr><td>(\d)</td>", phases) == ["1", "2", "3", "4"]
    assert "<h3>Phase 1 (pilot, prove):" in page and "Phase 0" not in page
    assert page.count('<span class="tone tone-ok">passed</span>') == 4
    assert "phase 0" not in page.lower()
    assert f"/admin/canary/rollout/{rollout.pk}/report.md" in page
    assert f"/admin/canary/rollout/{rollout.pk}/report.json" in page


def test_report_downloads__markdown_and_json_attachments(admin_client, rollout_factory):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    base = f"/admin/canary/rollout/{rollout.pk}"
    # When
    markdown = admin_client.get(f"{base}/report.md")
    data = admin_client.get(f"{base}/report.json")
    # Then
    assert markdown.status_code == 200
    assert markdown["Content-Type"].startswith("text/markdown")
    assert "attachment" in markdown["Content-Disposition"]
    text = markdown.content.decode()
    assert text.startswith(f"# Rollout {rollout.pk}: ")
    assert "- Status: **completed** (phase 4 of 4)" in text
    assert "| 1 | pilot |" in text and "| 0 | pilot |" not in text
    assert data["Content-Type"] == "application/json"
    report = json.loads(data.content)
    assert report["verdict"] == "proceed"
    assert [p["index"] for p in report["phases"]] == [0, 1, 2, 3]  # data: 0-based


def test_report_pages__unknown_rollout__404_and_anonymous__login(
    admin_client, client, rollout_factory
):
    # Given
    rollout = rollout_factory()
    # When / Then
    for suffix in ("report/", "report.md", "report.json"):
        assert (
            admin_client.get(f"/admin/canary/rollout/999999/{suffix}").status_code
            == 404
        )
        anonymous = client.get(f"/admin/canary/rollout/{rollout.pk}/{suffix}")
        assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


def test_read_only_pages__completed_rollout_check_run_rollback_run__no_save(
    admin_client, rollout_factory
):
    # Given: a completed rollout, its check runs, and a rolled-back one's run
    done = run_to_completion(rollout_factory(started=True))
    failing = rollout_factory(started=True)
    services.rollout_rollback(
        rollout_id=failing.pk, level=1, actor=SYSTEM, reason="red"
    )
    run = RollbackRun.objects.get(trigger_ref=str(failing.pk))
    check_run = CheckRun.objects.filter(rollout=done).first()
    # When
    pages = {
        "rollout": admin_client.get(change_url(done)),
        "check run": admin_client.get(f"/admin/canary/checkrun/{check_run.pk}/change/"),
        "rollback run": admin_client.get(
            f"/admin/rollback/rollbackrun/{run.pk}/change/"
        ),
    }
    runs_list = admin_client.get("/admin/rollback/rollbackrun/").content.decode()
    # Then: each page shows, none has a Save button or an editable field
    for name, response in pages.items():
        html = response.content.decode()
        assert response.status_code == 200, name
        assert 'name="_save"' not in html and 'name="_continue"' not in html, name
        assert "<textarea" not in html, name
    assert (
        '<span class="tone tone-ok">pass</span>' in pages["check run"].content.decode()
    )
    run_page = pages["rollback run"].content.decode()
    run.refresh_from_db()
    # (the run is queued after commit, which a test transaction never reaches)
    assert run.status == "pending"
    assert '<span class="tone tone-wait">pending</span>' in run_page
    assert '<time class="when"' in run_page
    # ... and the list keeps its action (retry a failed run)
    assert 'value="retry_failed_run"' in runs_list


def test_deployment_page__read_only__no_save_action_kept(admin_client, production):
    # Given
    from rollback.services import deployment_record

    deployment = deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v1",
        artifact="img:v1",
        migration_state={},
    )
    # When
    page = admin_client.get(
        f"/admin/rollback/deployment/{deployment.pk}/change/"
    ).content.decode()
    listing = admin_client.get("/admin/rollback/deployment/").content.decode()
    # Then
    assert 'name="_save"' not in page
    assert 'value="roll_back_now"' in listing
