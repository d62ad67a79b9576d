"""Canary API routes under /api/v1/."""

from django.urls import path

from canary.api import (
    check_template_views,
    outcome_views,
    pipeline_views,
    release_views,
    views,
)

urlpatterns = [
    path(
        "events", outcome_views.OutcomeEventsIngestApi.as_view(), name="outcome-events"
    ),
    # Rollout management (canary/api/views.py)
    path("rollouts", views.RolloutListCreateApi.as_view(), name="rollout-list"),
    path(
        "rollout-templates", views.TemplateListApi.as_view(), name="rollout-templates"
    ),
    path("rollouts/<int:pk>", views.RolloutDetailApi.as_view(), name="rollout-detail"),
    path(
        "rollouts/<int:pk>/start", views.RolloutStartApi.as_view(), name="rollout-start"
    ),
    path(
        "rollouts/<int:pk>/approve",
        views.RolloutApproveApi.as_view(),
        name="rollout-approve",
    ),
    path(
        "rollouts/<int:pk>/pause", views.RolloutPauseApi.as_view(), name="rollout-pause"
    ),
    path(
        "rollouts/<int:pk>/resume",
        views.RolloutResumeApi.as_view(),
        name="rollout-resume",
    ),
    path(
        "rollouts/<int:pk>/abort", views.RolloutAbortApi.as_view(), name="rollout-abort"
    ),
    path(
        "rollouts/<int:pk>/fail-phase",
        views.RolloutFailPhaseApi.as_view(),
        name="rollout-fail-phase",
    ),
    path(
        "rollouts/<int:pk>/rollback",
        views.RolloutRollbackApi.as_view(),
        name="rollout-rollback",
    ),
    path(
        "rollouts/<int:pk>/baseline",
        views.RolloutBaselineApi.as_view(),
        name="rollout-baseline",
    ),
    path(
        "rollouts/<int:pk>/stop-escalation",
        views.RolloutEscalationStopApi.as_view(),
        name="rollout-stop-escalation",
    ),
    path(
        "rollouts/<int:pk>/check-runs",
        views.RolloutCheckRunsApi.as_view(),
        name="rollout-check-runs",
    ),
    path(
        "rollouts/<int:pk>/report",
        views.RolloutReportApi.as_view(),
        name="rollout-report",
    ),
    path(
        "rollouts/<int:pk>/checks",
        views.RolloutChecksApi.as_view(),
        name="rollout-checks",
    ),
    path(
        "rollouts/<int:pk>/checks/<int:check_id>",
        views.RolloutCheckDetailApi.as_view(),
        name="rollout-check-detail",
    ),
    # Releases (canary/api/release_views.py)
    path("releases", release_views.ReleaseListCreateApi.as_view(), name="release-list"),
    path(
        "releases/<int:pk>",
        release_views.ReleaseDetailApi.as_view(),
        name="release-detail",
    ),
    *(
        path(
            f"releases/<int:pk>/{name}",
            view.as_view(),
            name=f"release-{name}",
        )
        for name, view in (
            ("start", release_views.ReleaseStartApi),
            ("pause", release_views.ReleasePauseApi),
            ("resume", release_views.ReleaseResumeApi),
            ("approve", release_views.ReleaseApproveApi),
            ("abort", release_views.ReleaseAbortApi),
        )
    ),
    # Check templates (canary/api/check_template_views.py)
    path(
        "check-templates",
        check_template_views.CheckTemplateListCreateApi.as_view(),
        name="check-template-list",
    ),
    path(
        "check-templates/<str:name>",
        check_template_views.CheckTemplateDetailApi.as_view(),
        name="check-template-detail",
    ),
    path(
        "check-templates/<str:name>/versions",
        check_template_views.CheckTemplateVersionsApi.as_view(),
        name="check-template-versions",
    ),
    path(
        "check-templates/<str:name>/versions/<int:version>",
        check_template_views.CheckTemplateVersionDetailApi.as_view(),
        name="check-template-version-detail",
    ),
    path(
        "check-templates/<str:name>/archive",
        check_template_views.CheckTemplateArchiveApi.as_view(),
        name="check-template-archive",
    ),
    # Pipelines across environments (canary/api/pipeline_views.py)
    path(
        "pipelines",
        pipeline_views.PipelineListCreateApi.as_view(),
        name="pipeline-list",
    ),
    path(
        "pipelines/<int:pk>",
        pipeline_views.PipelineDetailApi.as_view(),
        name="pipeline-detail",
    ),
    path(
        "pipelines/<int:pk>/start",
        pipeline_views.PipelineStartApi.as_view(),
        name="pipeline-start",
    ),
    path(
        "pipelines/<int:pk>/approve",
        pipeline_views.PipelineApproveApi.as_view(),
        name="pipeline-approve",
    ),
    path(
        "pipelines/<int:pk>/abort",
        pipeline_views.PipelineAbortApi.as_view(),
        name="pipeline-abort",
    ),
]
