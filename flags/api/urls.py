"""Management REST API routes under /api/v1/ (objects addressed by key)."""

from django.urls import path, register_converter

from controlplane.audit import api as audit_api
from flags.api import apikey_views, state_views, trigger_views, usage_views, views


class KeyConverter:
    """A key in a URL: no slash and no NUL (which no database column holds)."""

    regex = "[^/\x00]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class MerchantKeyConverter(KeyConverter):
    """A merchant key, last in its URL: apps' merchant ids may contain '/'."""

    regex = "[^\x00]+"


register_converter(KeyConverter, "key")
register_converter(MerchantKeyConverter, "merchant_key")

_STATE = "flags/<key:key>/environments/<key:env>"

urlpatterns = [
    path(
        "environments",
        views.EnvironmentListCreateApi.as_view(),
        name="environment-list",
    ),
    path(
        "environments/<key:env>",
        views.EnvironmentDetailApi.as_view(),
        name="environment-detail",
    ),
    path("merchants", views.MerchantListCreateApi.as_view(), name="merchant-list"),
    path(
        "merchants/bulk-upsert",
        views.MerchantBulkUpsertApi.as_view(),
        name="merchant-bulk-upsert",
    ),
    path(
        "merchants/<merchant_key:merchant>",
        views.MerchantDetailApi.as_view(),
        name="merchant-detail",
    ),
    path("segments", views.SegmentListCreateApi.as_view(), name="segment-list"),
    path("segments/<key:key>", views.SegmentDetailApi.as_view(), name="segment-detail"),
    path("flags", views.FlagListCreateApi.as_view(), name="flag-list"),
    path("flags/<key:key>", views.FlagDetailApi.as_view(), name="flag-detail"),
    path(
        "flags/<key:key>/archive", views.FlagArchiveApi.as_view(), name="flag-archive"
    ),
    path(
        "flags/<key:key>/unarchive",
        views.FlagUnarchiveApi.as_view(),
        name="flag-unarchive",
    ),
    path(_STATE, state_views.FlagStateDetailApi.as_view(), name="flag-state-detail"),
    path(
        f"{_STATE}/kill", state_views.FlagStateKillApi.as_view(), name="flag-state-kill"
    ),
    path(
        f"{_STATE}/restore",
        state_views.FlagStateRestoreApi.as_view(),
        name="flag-state-restore",
    ),
    path(
        f"{_STATE}/enable",
        state_views.FlagStateEnableApi.as_view(),
        name="flag-state-enable",
    ),
    path(
        f"{_STATE}/disable",
        state_views.FlagStateDisableApi.as_view(),
        name="flag-state-disable",
    ),
    path(
        f"{_STATE}/percentage",
        state_views.FlagStatePercentageApi.as_view(),
        name="flag-state-percentage",
    ),
    path(
        f"{_STATE}/serve",
        state_views.FlagStateServeApi.as_view(),
        name="flag-state-serve",
    ),
    path(
        f"{_STATE}/overrides",
        state_views.OverrideListApi.as_view(),
        name="override-list",
    ),
    path(
        f"{_STATE}/overrides/<merchant_key:merchant>",
        state_views.OverrideDetailApi.as_view(),
        name="override-detail",
    ),
    path("api-keys", apikey_views.ApiKeyListCreateApi.as_view(), name="api-key-list"),
    path(
        "api-keys/<key:id>",
        apikey_views.ApiKeyDetailApi.as_view(),
        name="api-key-detail",
    ),
    path(
        "api-keys/<key:id>/revoke",
        apikey_views.ApiKeyRevokeApi.as_view(),
        name="api-key-revoke",
    ),
    path(
        "triggers",
        trigger_views.AlertTriggerListCreateApi.as_view(),
        name="trigger-list",
    ),
    path(
        "triggers/<key:id>",
        trigger_views.AlertTriggerDetailApi.as_view(),
        name="trigger-detail",
    ),
    path(
        "triggers/<key:id>/revoke",
        trigger_views.AlertTriggerRevokeApi.as_view(),
        name="trigger-revoke",
    ),
    path(
        "triggers/<key:id>/<key:secret>/",
        trigger_views.AlertTriggerCallApi.as_view(),
        name="trigger-call",
    ),
    path("usage", usage_views.FlagUsageReportApi.as_view(), name="usage-report"),
    path(
        "audit-events", audit_api.AuditEventListApi.as_view(), name="audit-event-list"
    ),
    path(
        "audit-events/verify",
        audit_api.AuditChainVerifyApi.as_view(),
        name="audit-event-verify",
    ),
]
