"""ASGI entry point: ``granian --interface asgi controlplane.asgi:application``.

The ruleset stream (``GET /api/v1/environments/{key}/stream``) is answered
natively (flags.stream_asgi), so an open stream costs a task, not a worker;
every other path goes to Django's ASGI handler.
"""

import os

from django.core.asgi import get_asgi_application
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_application = get_asgi_application()

# The entry point wires the apps in by dotted path, as urls.py does: the
# controlplane layer imports nothing from the apps (tests/test_layers.py).
application = import_string("flags.stream_asgi.make_app")(django_application)
