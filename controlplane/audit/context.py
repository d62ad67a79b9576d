"""The request id of the current request or task, for audit events."""

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("controlplane_request_id", default="")


def current_request_id() -> str:
    """Return the request id bound to this context, or an empty string."""
    return request_id_var.get()
