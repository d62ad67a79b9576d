"""Rollback management API under /api/v1/."""

from django.urls import path

from rollback.api import views

urlpatterns = [
    path(
        "deployments", views.DeploymentListCreateApi.as_view(), name="deployment-list"
    ),
    path(
        "deployments/<int:deployment_id>",
        views.DeploymentDetailApi.as_view(),
        name="deployment-detail",
    ),
    path(
        "deployments/<int:deployment_id>/preflight",
        views.DeploymentPreflightApi.as_view(),
        name="deployment-preflight",
    ),
    path(
        "rollback-runs",
        views.RollbackRunCreateApi.as_view(),
        name="rollback-run-create",
    ),
    path(
        "rollback-runs/<int:run_id>",
        views.RollbackRunDetailApi.as_view(),
        name="rollback-run-detail",
    ),
    path(
        "rollback-runs/<int:run_id>/retry",
        views.RollbackRunRetryApi.as_view(),
        name="rollback-run-retry",
    ),
]
