"""Admin glue for targeting rows: fieldsets and the override rows' writes.

The override rows of a flag state page become one ``override_set`` or
``override_remove`` per changed row (each with its audit event), inside the
admin's transaction: a refused row rolls the whole save back and comes back
as an error on the rows. Each row goes through the four-eyes gate: where the
environment's policy asks for approvals, the row becomes a change request
and its override stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from controlplane.audit.actors import Actor
from controlplane.exceptions import DomainError, InvalidInput
from flags import services
from flags.admin import flag_page
from flags.admin.override_rows import local_input
from flags.changes import gate
from flags.changes.models import ChangeRequest
from flags.models import Flag, FlagState, Merchant, MerchantOverride

ADVANCED = "Advanced: JSON (collapsed; edit only if the rows above cannot say it)"


def flag_fieldsets(fields: list[str]) -> list[tuple[str | None, dict]]:
    """Return the flag form's fieldsets: rows in place of JSON, JSON collapsed."""
    main = [
        ("variation_rows" if name == "variations" else name)
        for name in fields
        if name != "variations"
    ]
    if "variations" not in fields:
        return [(None, {"fields": main})]
    index = fields.index("variations")
    main.insert(index, "variation_rows")
    return [
        (None, {"fields": main}),
        (ADVANCED, {"fields": ["variations"], "classes": ["collapse"]}),
    ]


STATE_FIELDSETS = [
    (
        None,
        {"fields": ["flag", "environment", "kill_state", "serving", "current_version"]},
    ),
    (
        "Serving (saved against the version you loaded: a concurrent change is refused)",
        {
            "fields": [
                "enabled",
                "off_variation",
                "targeting_rules",
                "targeting_default",
                "bucket_by",
                "version",
            ]
        },
    ),
    ("Merchant overrides (before any rule)", {"fields": ["overrides_rows"]}),
    (ADVANCED, {"fields": ["rules", "fallthrough"], "classes": ["collapse"]}),
]


def _submit_row(
    *,
    actor: Actor,
    state: FlagState,
    operation: str,
    merchant: str,
    fields: dict[str, Any],
    apply: Callable[[], Any],
) -> ChangeRequest | None:
    """Apply one row's change, or make it a change request; None: applied."""
    try:
        outcome = gate.submit(  # four-eyes may make it a change request
            actor=actor,
            operation=operation,
            arguments=gate.state_arguments(
                flag=state.flag.key,
                environment=state.environment.key,
                merchant=merchant,
                **fields,
            ),
            apply=apply,
        )
    except DomainError as exc:
        # shown on the override rows, naming the merchant
        raise InvalidInput(
            f"override of {merchant}: {exc.message}", field="overrides_rows"
        ) from None
    return outcome.change_request


def overrides_apply(
    *, actor: Actor, state: FlagState, wanted: list[dict] | None
) -> list[ChangeRequest]:
    """Set or remove the overrides whose rows changed.

    Return the change requests made of rows that need approval (their
    overrides are left as they are). Raise InvalidInput on
    ``overrides_rows`` when a row is refused.
    """
    if not wanted:
        return []
    current = {
        override.merchant.key: override
        for override in MerchantOverride.objects.filter(
            flag_id=state.flag_id, environment_id=state.environment_id
        ).select_related("merchant")
    }
    pending: list[ChangeRequest | None] = []
    for row in wanted:
        key = row["merchant"]
        existing = current.get(key)
        if row["variation"] is None:
            if existing is not None:
                reason = "removed in the admin"
                pending.append(
                    _submit_row(
                        actor=actor,
                        state=state,
                        operation="override.remove",
                        merchant=key,
                        fields={"reason": reason},
                        apply=lambda existing=existing, reason=reason: (
                            services.override_remove(
                                actor=actor,
                                flag=state.flag,
                                environment=state.environment,
                                merchant=existing.merchant,
                                reason=reason,
                            )
                        ),
                    )
                )
            continue
        expires_at = row["expires_at"]
        if existing is not None:
            if local_input(existing.expires_at) == row["expiry_text"]:
                expires_at = existing.expires_at  # untouched: keep the seconds
            if (existing.variation, existing.note, existing.expires_at) == (
                row["variation"],
                row["note"],
                expires_at,
            ):
                continue
            merchant = existing.merchant
        else:
            merchant = Merchant.objects.filter(key=key).first()
            if merchant is None:
                raise InvalidInput(
                    f"overrides: unknown merchant {key!r}", field="overrides_rows"
                )
        fields = {
            "variation": row["variation"],
            "note": row["note"],
            "expires_at": expires_at,
        }
        pending.append(
            _submit_row(
                actor=actor,
                state=state,
                operation="override.set",
                merchant=key,
                fields=fields,
                apply=lambda merchant=merchant, fields=fields: services.override_set(
                    actor=actor,
                    flag=state.flag,
                    environment=state.environment,
                    merchant=merchant,
                    **fields,
                ),
            )
        )
    return [change for change in pending if change is not None]


def state_update_data(data: dict[str, Any]) -> dict[str, Any]:
    """Return the ``flag_state_update`` arguments of a cleaned state form."""
    return {
        "expected_version": data["version"],
        "enabled": data["enabled"],
        "off_variation": data["off_variation"],
        "rules": data["rules"],
        "fallthrough": data["fallthrough"],
        "bucket_by": data["bucket_by"],
    }


def flag_page_context(request: HttpRequest, flag: Flag | None) -> tuple[dict, int]:
    """Return the flag page's who-gets-what and evaluation, and the status.

    A GET with ``evaluate_merchant`` evaluates on the spot; bad input there
    is shown on the page with status 400.
    """
    if flag is None or request.method != "GET":
        return {}, 200
    context: dict[str, Any] = {"who_gets_what": flag_page.who_gets_what(flag)}
    if "evaluate_merchant" not in request.GET:
        return context, 200
    environment = request.GET.get("evaluate_environment", "")
    answer = flag_page.evaluate_here(
        flag, environment, request.GET.get("evaluate_merchant", "")
    )
    context["evaluation"] = answer
    return context, 400 if answer.field else 200
