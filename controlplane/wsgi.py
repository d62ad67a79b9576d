"""WSGI entry point (``granian --interface wsgi controlplane.wsgi:application``,
or ``gunicorn controlplane.wsgi``).

The evaluation endpoints are answered by the hot path (``flags.hotpath``)
before Django's request cycle; every other path goes to Django.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_application = get_wsgi_application()

# The entry point wires the apps in by dotted path, as urls.py does: the
# controlplane layer imports nothing from the apps (tests/test_layers.py).
make_hot_path = import_string("flags.hotpath.make_app")
application = make_hot_path(fallback=django_application)

# What start-up loaded lives as long as the process: keep the collector from
# walking it again and again (a full collection over it is a latency spike).
gc.freeze()
