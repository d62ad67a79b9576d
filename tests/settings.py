"""Settings for the test suite: the project's settings plus test-only apps."""

import atexit
import shutil
import tempfile

from controlplane.settings import *  # noqa: F401,F403
from controlplane.settings import DATABASES, INSTALLED_APPS

# Test-only Django apps (e.g. apps with migrations that rollback tests revert).
TEST_APPS: list[str] = [
    "tests.rollback.migrapp_ok.apps.MigrappOkConfig",
    "tests.rollback.migrapp_irreversible.apps.MigrappIrreversibleConfig",
]
INSTALLED_APPS = [*INSTALLED_APPS, *TEST_APPS]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = ""
# No serving background threads (ruleset poller, API key revalidator) beside
# tests that roll back their transaction; tests that need them turn them on.
CONTROLPLANE = {"RULESET_BACKGROUND": False}
# Outage: the serving state written to disk by this run stays out of var/.
CONTROLPLANE["SERVING_STATE_DIR"] = tempfile.mkdtemp(prefix="cp-serving-state-")
atexit.register(shutil.rmtree, CONTROLPLANE["SERVING_STATE_DIR"], True)

# A live server's request threads outlive a request while the browser keeps
# its connection alive: with CONN_MAX_AGE they would still hold database
# sessions when the test database is dropped at the end of the run.
DATABASES["default"]["CONN_MAX_AGE"] = 0
