"""Canary API routes under /api/v1/."""
from django.urls import path

from canary.api import outcome_views

urlpatterns = [
    path("events", outcome_views.OutcomeEventsIngestApi.as_view(), name="outcome-events"),
]
