"""An OpenFeature hook that reports the flags served with a request's outcome.

For apps that evaluate through the OpenFeature Python SDK (for example with
the OFREP provider against ``/ofrep/v1``) instead of ``flags.client``: the
hook's ``after`` records the flag key and variant of every successful
evaluation into the request scope current in the context
(``flags.client_events``, a ``contextvars`` variable), for the evaluation's
``targetingKey``; the scope reports the request's outcome through an
``EventSender``, the same sender the Python client uses.

    sender = EventSender("https://flags.example", server_key)
    hook = OutcomeHook(sender)
    api.add_hooks([hook])
    with hook.request("m-42", name="checkout"):  # an exception -> failure
        client.get_boolean_value("sequential_workflow", False,
                                 EvaluationContext(targeting_key="m-42"))

Errors (``FLAG_NOT_FOUND``, a type mismatch) serve the caller's default and
no variant: they are not recorded. The hook never raises into the SDK.
"""

from __future__ import annotations

import logging
from typing import Any

from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.hook import Hook, HookContext, HookHints

from flags.client_events import EventSender, RequestScope, current_scope

log = logging.getLogger(__name__)

__all__ = ["OutcomeHook"]


class OutcomeHook(Hook):
    """Record each flag served into the current request scope."""

    def __init__(self, sender: EventSender | None = None) -> None:
        self.sender = sender

    def request(self, merchant: str | None = None, *, name: str = "") -> RequestScope:
        """Return a request scope reporting through this hook's sender.

        Without ``merchant`` the scope takes the first evaluation's
        ``targetingKey``. Use it with ``with``; it becomes current there.
        """
        if self.sender is None:
            raise ValueError("OutcomeHook(sender) is needed to open a request scope")
        return RequestScope(self.sender, merchant, name=name)

    def report(
        self,
        outcome: str = "success",
        *,
        duration_ms: float | None = None,
        name: str | None = None,
    ) -> list[dict]:
        """Report the current scope's outcome now (``[]`` without a scope)."""
        scope = current_scope()
        if scope is None:
            return []
        return scope.report(outcome, duration_ms=duration_ms, name=name)

    def after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[Any],
        hints: HookHints,
    ) -> None:
        # An exception from an after hook makes the SDK serve the default:
        # recording must never fail the evaluation.
        try:
            scope = current_scope()
            if scope is None or details.error_code or details.variant is None:
                return
            context = hook_context.evaluation_context
            scope.record(
                hook_context.flag_key,
                str(details.variant),
                getattr(context, "targeting_key", None),
            )
        except Exception:
            log.debug("flags: outcome hook could not record", exc_info=True)
