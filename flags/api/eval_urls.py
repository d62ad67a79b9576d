"""Evaluation routes: native, OFREP, and the ruleset for local evaluation."""

from django.urls import path

from flags.api import eval_views

urlpatterns = [
    path("api/v1/evaluate", eval_views.evaluate, name="flags-evaluate"),
    path(
        "ofrep/v1/evaluate/flags/<path:key>",
        eval_views.ofrep_evaluate_flag,
        name="ofrep-evaluate-flag",
    ),
    path(
        "ofrep/v1/evaluate/flags",
        eval_views.ofrep_evaluate_flags,
        name="ofrep-evaluate-flags",
    ),
    path(
        "api/v1/environments/<str:key>/ruleset",
        eval_views.environment_ruleset,
        name="environment-ruleset",
    ),
]
