"""The Celery application.

With no ``CELERY_BROKER_URL`` set, tasks run in process (eager), which is the
zero-setup default; with a broker, ``celery -A controlplane worker`` runs them.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
