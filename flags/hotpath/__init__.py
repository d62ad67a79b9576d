"""The evaluation hot path: a WSGI application answered before Django.

``make_app`` builds it (the control plane's key cache and ruleset store by
default; a relay passes its own sources); ``route`` says which paths it
answers. See ``flags.hotpath.app``.
"""

from flags.hotpath.app import SERVED_BY, make_app, route

__all__ = ["SERVED_BY", "make_app", "route"]
