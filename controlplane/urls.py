"""Root URLs: admin, metrics, API schema, and each app's API routes."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

admin.site.site_header = "Control plane"
admin.site.site_title = "Control plane"
admin.site.index_title = "Flags, rollouts, rollbacks and the audit log"

urlpatterns = [
    # The evaluation hot path first: fewest patterns tried per request.
    # Evaluation (native + OFREP) and the ruleset endpoint: flags/api/eval_urls.py
    path("", include("flags.api.eval_urls")),
    path("admin/", admin.site.urls),
    # / : the operator's overview (signed-in staff; others go to the login)
    path("", include("canary.home_urls")),
    path("", include("django_prometheus.urls")),  # /metrics
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema"),
        name="swagger-ui",
    ),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    # Management REST API (/api/v1/...): one module per app
    path("api/v1/", include("flags.api.urls")),
    path("api/v1/", include("rollback.api.urls")),
    path("api/v1/", include("canary.api.urls")),
    path("api/v1/", include("flags.changes.api.urls")),
    # Browsers ask for /favicon.ico on pages that name no icon (the API docs)
    path("favicon.ico", RedirectView.as_view(url=static("console/favicon.svg"))),
]
