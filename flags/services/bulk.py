"""Bulk writes: many merchants in one transaction, each change audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.conf import setting
from controlplane.exceptions import Conflict, InvalidInput
from flags.models import Merchant
from flags.services._common import bump_all_rulesets
from flags.services.registry import _clean_attributes, _merchant_snapshot


@dataclass(frozen=True, slots=True)
class BulkUpsertResult:
    created: int
    updated: int
    unchanged: int


def _clean_item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: must be an object", field=where)
    key = item.get("key")
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput(f"{where}.key: is required", field=f"{where}.key")
    name = item.get("name", "")
    if not isinstance(name, str):
        raise InvalidInput(f"{where}.name: must be a string", field=f"{where}.name")
    is_active = item.get("is_active", True)
    if not isinstance(is_active, bool):
        raise InvalidInput(
            f"{where}.is_active: must be true or false", field=f"{where}.is_active"
        )
    try:
        attributes = _clean_attributes(item.get("attributes"))
    except InvalidInput as exc:
        field = f"{where}.{exc.field or 'attributes'}"
        raise InvalidInput(f"{where}.{exc.message}", field=field) from None
    return {"key": key, "name": name, "is_active": is_active, "attributes": attributes}


def merchant_upsert_many(*, actor: Any, items: list[dict]) -> BulkUpsertResult:
    """Create or update many merchants by key, all or nothing.

    Each item is ``{key, name?, attributes?, is_active?}``; an existing
    merchant gets the given name, attributes (replaced whole) and activity.
    Writes one ``merchant.created`` or ``merchant.updated`` audit event per
    merchant that changes (none for unchanged ones, ``details.bulk`` set),
    and moves every ruleset once. Raises InvalidInput naming the first bad
    item (``merchants[3].key``), a duplicate key, or a batch over
    ``MERCHANT_BULK_UPSERT_MAX``; nothing is written then.
    """
    limit = setting("MERCHANT_BULK_UPSERT_MAX")
    if not isinstance(items, list):
        raise InvalidInput("merchants: must be a list", field="merchants")
    if len(items) > limit:
        raise InvalidInput(
            f"merchants: at most {limit} per request (got {len(items)})",
            field="merchants",
        )
    cleaned: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"merchants[{index}]"
        data = _clean_item(item, where)
        if data["key"] in seen:
            raise InvalidInput(
                f"{where}.key: {data['key']!r} already given at merchants[{seen[data['key']]}]",
                field=f"{where}.key",
            )
        seen[data["key"]] = index
        cleaned.append(data)
    with audited_transaction():
        existing = {
            merchant.key: merchant
            for merchant in Merchant.objects.select_for_update().filter(
                key__in=list(seen)
            )
        }
        now = timezone.now()
        changes: list[tuple[Merchant, dict | None, dict]] = []
        unchanged = 0
        for index, data in enumerate(cleaned):
            merchant = existing.get(data["key"])
            before = _merchant_snapshot(merchant) if merchant else None
            merchant = merchant or Merchant(key=data["key"], created_at=now)
            merchant.name = data["name"]
            merchant.attributes = data["attributes"]
            merchant.is_active = data["is_active"]
            merchant.updated_at = now
            after = _merchant_snapshot(merchant)
            if before == after:
                unchanged += 1
                continue
            _clean_fields(merchant, f"merchants[{index}]")
            changes.append((merchant, before, after))
        new = [merchant for merchant, before, _ in changes if before is None]
        old = [merchant for merchant, before, _ in changes if before is not None]
        try:
            # Keys were checked against the rows locked above; a clash here
            # means another request created the same key meanwhile.
            with audited_transaction():
                Merchant.objects.bulk_create(new, batch_size=500)
        except IntegrityError:
            raise Conflict(
                "merchants: some of these keys were just created by another "
                "request; retry",
                field="merchants",
            ) from None
        Merchant.objects.bulk_update(
            old, ["name", "attributes", "is_active", "updated_at"], batch_size=500
        )
        for merchant, before, after in changes:
            record_audit_event(
                actor=actor,
                action="merchant.updated" if before else "merchant.created",
                target=merchant,
                before=before,
                after=after,
                details={"bulk": True},
            )
        if changes:
            bump_all_rulesets()  # registry attributes feed rule evaluation
    return BulkUpsertResult(created=len(new), updated=len(old), unchanged=unchanged)


def _clean_fields(merchant: Merchant, where: str) -> None:
    """Validate field values; uniqueness is already settled by the caller."""
    try:
        merchant.clean_fields(exclude=["created_at", "updated_at"])
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidInput(
            f"{where}.{field}: {messages[0]}", field=f"{where}.{field}"
        ) from None


__all__ = ["BulkUpsertResult", "merchant_upsert_many"]
