"""manage.py pipeline: the subcommands' happy paths and their mistakes."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from canary.models import Pipeline, PipelineStatus, RolloutStatus
from controlplane.audit.actors import actor_for_cli
from tests.canary.pipeline_helpers import (
    PILOT,
    complete_stage,
    make_pipeline,
    stage_rollout,
)

Status = RolloutStatus


def run(*args: str) -> str:
    out = StringIO()
    call_command("pipeline", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def flag(environments, flag_factory, merchant_factory):
    merchant_factory(PILOT)
    return flag_factory("sequential_workflow")


def test_pipeline_create__two_stages__draft_shown_with_stages(flag):
    # Given / When
    out = run(
        "create",
        "--flag",
        "sequential_workflow",
        "--stage",
        "staging:demo-fast",
        "--stage",
        "production:pilot-10-50-100",
        "--pilot",
        PILOT,
        "--no-checks",
        "--requires-approval",
    )
    # Then
    pipeline = Pipeline.objects.get()
    assert f"pipeline {pipeline.pk} created (draft)" in out
    assert "staging" in out and "production" in out
    assert f"manage.py pipeline start {pipeline.pk}" in out
    assert pipeline.requires_approval is True


def test_pipeline_create__unknown_environment__one_line_error(flag):
    # Given / When
    with pytest.raises(CommandError) as caught:
        run(
            "create",
            "--flag",
            "sequential_workflow",
            "--stage",
            "staging:demo-fast",
            "--stage",
            "mars:demo-fast",
            "--pilot",
            PILOT,
        )
    # Then
    assert str(caught.value) == "stages[1].environment: unknown environment 'mars'"
    assert "\n" not in str(caught.value)


def test_pipeline_create__bad_stage_text__one_line_error(flag):
    # Given / When / Then
    with pytest.raises(CommandError, match="give ENV:PLAN"):
        run("create", "--flag", "sequential_workflow", "--stage", "staging")


def test_pipeline_start_list_show_abort__running__lines(flag):
    # Given
    pipeline = make_pipeline(flag="sequential_workflow")
    # When
    started = run("start", str(pipeline.pk))
    listed = run("list")
    shown = run("show", str(pipeline.pk))
    aborted = run("abort", str(pipeline.pk), "--reason", "stop")
    # Then
    assert f"pipeline {pipeline.pk} running: stage 1 started" in started
    assert listed.splitlines()[0].split() == [
        "id",
        "status",
        "stage",
        "approval",
        "name",
    ]
    assert "running" in listed and "1/2" in listed
    assert "Stages" in shown and "rollout" in shown
    assert f"pipeline {pipeline.pk} aborted" in aborted
    assert stage_rollout(pipeline, 1).status == Status.ABORTED


def test_pipeline_approve__creator_from_cli__refused_one_line(
    flag, django_capture_on_commit_callbacks
):
    # Given: created at the command line by this user
    pipeline = make_pipeline(
        flag="sequential_workflow", actor=actor_for_cli(), requires_approval=True
    )
    run("start", str(pipeline.pk))
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    # When
    with pytest.raises(CommandError) as caught:
        run("approve", str(pipeline.pk))
    # Then
    assert "cannot approve" in str(caught.value)
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.AWAITING_APPROVAL


def test_pipeline_approve__another_person__production_starts(
    flag, django_capture_on_commit_callbacks
):
    # Given: created by alice, approved by this user at the command line
    pipeline = make_pipeline(flag="sequential_workflow", requires_approval=True)
    run("start", str(pipeline.pk))
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    # When
    with django_capture_on_commit_callbacks(execute=True):
        out = run("approve", str(pipeline.pk))
    # Then
    assert f"pipeline {pipeline.pk} approved: stage 2" in out
    assert stage_rollout(pipeline, 1).status == Status.RUNNING


def test_pipeline_show__unknown__one_line_error(db):
    # Given / When / Then
    with pytest.raises(CommandError, match="unknown pipeline 404"):
        run("show", "404")
