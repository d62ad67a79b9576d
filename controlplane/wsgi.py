"""WSGI entry point (``granian --interface wsgi controlplane.wsgi:application``,
or ``gunicorn controlplane.wsgi``).

The evaluation endpoints are answered by the hot path (``flags.hotpath``)
before Django's request cycle; every other path goes to Django.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_application = get_wsgi_application()

from flags.hotpath import make_app  # noqa: E402  (needs the apps loaded)

application = make_app(fallback=django_application)
