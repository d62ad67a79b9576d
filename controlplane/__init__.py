"""The control plane project: settings, root URLs, the Celery app."""

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
