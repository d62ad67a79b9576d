"""Merchants and segments: the registry rules and overrides refer to."""

from __future__ import annotations

from typing import Any

from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import Conflict, InvalidInput
from flags import engine, validation
from flags.models import FlagState, Merchant, Segment
from flags.services._common import bump_all_rulesets, full_clean, invalid_from


def _merchant_snapshot(merchant: Merchant) -> dict[str, Any]:
    return {
        "key": merchant.key,
        "name": merchant.name,
        "is_active": merchant.is_active,
        "attributes": merchant.attributes,
    }


def _clean_attributes(attributes: Any) -> dict:
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise InvalidInput("attributes: must be an object", field="attributes")
    for name, value in attributes.items():
        if name == engine.MERCHANT:
            raise InvalidInput(
                "attributes: 'merchant' is the merchant key, not an attribute",
                field="attributes",
            )
        if not (value is None or isinstance(value, (str, int, float, bool, list))):
            raise InvalidInput(
                f"attributes.{name}: use a string, number, boolean or list",
                field=f"attributes.{name}",
            )
    return attributes


def merchant_create(
    *,
    actor: Any,
    key: str,
    name: str = "",
    attributes: dict | None = None,
    is_active: bool = True,
) -> Merchant:
    """Register a merchant."""
    with audited_transaction():
        merchant = Merchant(
            key=key,
            name=name,
            is_active=is_active,
            attributes=_clean_attributes(attributes),
        )
        full_clean(merchant)
        merchant.save()
        record_audit_event(
            actor=actor,
            action="merchant.created",
            target=merchant,
            after=_merchant_snapshot(merchant),
        )
        bump_all_rulesets()  # registry attributes feed rule evaluation
    return merchant


def merchant_update(
    *,
    actor: Any,
    merchant: Merchant,
    name: str | None = None,
    attributes: dict | None = None,
    is_active: bool | None = None,
) -> Merchant:
    """Update a merchant's name, attributes (replaced whole) or activity."""
    with audited_transaction():
        merchant = Merchant.objects.select_for_update().get(pk=merchant.pk)
        before = _merchant_snapshot(merchant)
        if name is not None:
            merchant.name = name
        if attributes is not None:
            merchant.attributes = _clean_attributes(attributes)
        if is_active is not None:
            merchant.is_active = is_active
        full_clean(merchant)
        after = _merchant_snapshot(merchant)
        if after == before:
            return merchant
        merchant.save()
        record_audit_event(
            actor=actor,
            action="merchant.updated",
            target=merchant,
            before=before,
            after=after,
        )
        bump_all_rulesets()
    return merchant


def _clean_clauses(clauses: Any) -> list[dict]:
    if not isinstance(clauses, list) or not clauses:
        raise InvalidInput("clauses: needs at least one clause", field="clauses")
    try:
        return [
            validation.validate_clause(clause, f"clauses[{n}]", None)
            for n, clause in enumerate(clauses)
        ]
    except engine.RulesetError as exc:
        raise invalid_from(exc) from None


def _segment_snapshot(segment: Segment) -> dict[str, Any]:
    return {
        "key": segment.key,
        "name": segment.name,
        "description": segment.description,
        "clauses": segment.clauses,
    }


def segment_create(
    *,
    actor: Any,
    key: str,
    name: str = "",
    clauses: list,
    description: str = "",
) -> Segment:
    """Create a segment: clauses over merchant attributes, all of which must match."""
    with audited_transaction():
        segment = Segment(
            key=key,
            name=name or key,
            description=description,
            clauses=_clean_clauses(clauses),
        )
        full_clean(segment)
        segment.save()
        record_audit_event(
            actor=actor,
            action="segment.created",
            target=segment,
            after=_segment_snapshot(segment),
        )
    return segment


def segment_update(
    *,
    actor: Any,
    segment: Segment,
    name: str | None = None,
    clauses: list | None = None,
    description: str | None = None,
) -> Segment:
    """Update a segment; rulesets of every environment move with it."""
    with audited_transaction():
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        before = _segment_snapshot(segment)
        if name is not None:
            segment.name = name
        if description is not None:
            segment.description = description
        if clauses is not None:
            segment.clauses = _clean_clauses(clauses)
        full_clean(segment)
        after = _segment_snapshot(segment)
        if after == before:
            return segment
        segment.save()
        record_audit_event(
            actor=actor,
            action="segment.updated",
            target=segment,
            before=before,
            after=after,
        )
        bump_all_rulesets()
    return segment


def segment_delete(*, actor: Any, segment: Segment) -> None:
    """Delete a segment no rule uses."""
    with audited_transaction():
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        for state in FlagState.objects.select_related("flag", "environment"):
            for rule in state.rules:
                for clause in rule["clauses"]:
                    if clause["op"] == "segment" and segment.key in clause["values"]:
                        raise Conflict(
                            f"segment {segment.key!r} is used by {state}",
                            field="segment",
                        )
        record_audit_event(
            actor=actor,
            action="segment.deleted",
            target=segment,
            before=_segment_snapshot(segment),
        )
        segment.delete()
