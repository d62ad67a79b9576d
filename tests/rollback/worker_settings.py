"""Settings for real worker/command processes started by the crash tests.

The test passes its database, broker, queue and CONTROLPLANE values through
environment variables, so the worker shares the test's database.
"""

import json
import os

import dj_database_url

from tests.settings import *  # noqa: F401,F403

DATABASES = {"default": dj_database_url.parse(os.environ["ROLLBACK_TEST_DATABASE_URL"])}
CELERY_BROKER_URL = os.environ["ROLLBACK_TEST_BROKER_URL"]
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_DEFAULT_QUEUE = os.environ["ROLLBACK_TEST_QUEUE"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CONTROLPLANE = json.loads(os.environ.get("ROLLBACK_TEST_CONTROLPLANE", "{}"))
# Beat (`worker -B`) runs only the rollback reaper, at the project's interval.
CELERY_BEAT_SCHEDULE = {
    name: entry
    for name, entry in CELERY_BEAT_SCHEDULE.items()  # noqa: F405
    if name == "rollback-resume-stuck-runs"
}
