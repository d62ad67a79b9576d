"""Every test of tests/flags/test_metrics.py again, answered by the hot path.

The imported tests run with this module's ``client`` and ``live_server``
(tests/flags/test_hotpath_client.py): the evaluation routes then go through
``controlplane.wsgi.application``, which answers them before Django.
"""

from tests.flags.test_hotpath_client import client, live_server  # noqa: F401
from tests.flags.test_metrics import *  # noqa: F403
