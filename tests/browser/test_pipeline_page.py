"""The pipeline page in a real browser, offline: the stages stand side by
side with their evidence, Abort asks before it goes, and the production
rollout's page shows the staging evidence beside its own."""

from __future__ import annotations

import pytest

from canary.models import RolloutStatus
from tests.canary.pipeline_helpers import (
    ALICE,
    PILOT,
    make_pipeline,
    stage_rollout,
    stage_spec,
)
from tests.canary_ui.conftest import ERROR_RATE_CHECK, run_to_completion

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_pipeline_page__staging_completed__stages_side_by_side_and_evidence(
    page, admin_user, environments, flag_factory, merchant_factory
):
    # Given: staging measured and completed, production started by itself
    from canary.services.pipelines import pipeline_start

    merchant_factory(PILOT)
    flag_factory("sequential_workflow")
    pipeline = make_pipeline(
        flag="sequential_workflow",
        stages=[
            stage_spec("staging", checks=[ERROR_RATE_CHECK]),
            stage_spec("production", checks=[ERROR_RATE_CHECK]),
        ],
    )
    pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    run_to_completion(stage_rollout(pipeline, 0))
    production = stage_rollout(pipeline, 1)
    assert production.status == RolloutStatus.RUNNING
    # When
    page.login()
    page.get(f"/admin/canary/pipeline/{pipeline.pk}/change/")
    first = page.wait_for("#pipeline-stage-0")
    second = page.css("#pipeline-stage-1")
    page.shot("pipeline")
    # Then: two columns, staging's evidence in the first
    assert first.rect["y"] == second.rect["y"]
    assert first.rect["x"] < second.rect["x"]
    assert "error_rate" in first.text and "not_worse" in first.text
    assert "0.0100" in first.text
    # When: the production rollout's page
    page.get(f"/admin/canary/rollout/{production.pk}/change/")
    panel = page.wait_for("#earlier-stage-evidence")
    page.shot("pipeline-rollout")
    # Then
    assert "Staging evidence" in panel.text
    assert "staging" in panel.text and "production" in panel.text
    # When: Abort on the pipeline page
    page.get(f"/admin/canary/pipeline/{pipeline.pk}/change/")
    page.wait_for("a.pipeline-action.danger").click()
    text = page.accept_confirm()
    page.wait_for("form input[type=submit]")
    # Then
    assert text.startswith(f"Abort pipeline {pipeline.pk}")
