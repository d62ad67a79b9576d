"""The Celery application.

With no ``CELERY_BROKER_URL`` set, tasks run in process (eager), which is the
zero-setup default; with a broker, ``celery -A controlplane worker`` runs them.
"""

import logging
import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
logger = logging.getLogger(__name__)


@worker_init.connect
def refuse_failing_system_checks(**kwargs: object) -> None:
    """Stop a worker at start-up when a Django system check reports an error.

    Celery runs the checks but ignores their result; a worker is where an
    unusable deploy backend (rollback.E001) would do harm, so it must not
    start with one, as ``manage.py`` commands do not.
    """
    from django.core import checks

    errors = [message for message in checks.run_checks() if message.is_serious()]
    if errors:
        for message in errors:
            logger.error("system check failed: %s", message)
        # SystemExit, not an exception: Celery logs and swallows exceptions
        # raised by signal receivers.
        raise SystemExit(1)
