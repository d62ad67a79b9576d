"""Change-management routes under /api/v1/."""

from django.urls import path

from flags.api import urls as _flag_urls  # noqa: F401 - registers the key converter
from flags.changes.api import views

urlpatterns = [
    path(
        "change-requests",
        views.ChangeRequestListCreateApi.as_view(),
        name="change-request-list",
    ),
    path(
        "change-requests/<int:pk>",
        views.ChangeRequestDetailApi.as_view(),
        name="change-request-detail",
    ),
    path(
        "change-requests/<int:pk>/approve",
        views.ChangeRequestApproveApi.as_view(),
        name="change-request-approve",
    ),
    path(
        "change-requests/<int:pk>/reject",
        views.ChangeRequestRejectApi.as_view(),
        name="change-request-reject",
    ),
    path(
        "change-requests/<int:pk>/cancel",
        views.ChangeRequestCancelApi.as_view(),
        name="change-request-cancel",
    ),
    path(
        "scheduled-changes",
        views.ScheduledChangeListCreateApi.as_view(),
        name="scheduled-change-list",
    ),
    path(
        "scheduled-changes/<int:pk>",
        views.ScheduledChangeDetailApi.as_view(),
        name="scheduled-change-detail",
    ),
    path(
        "scheduled-changes/<int:pk>/cancel",
        views.ScheduledChangeCancelApi.as_view(),
        name="scheduled-change-cancel",
    ),
    path(
        "approval-policies/<key:env>",
        views.ApprovalPolicyApi.as_view(),
        name="approval-policy-detail",
    ),
]
