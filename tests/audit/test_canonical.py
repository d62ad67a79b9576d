"""The hash covers the stored canonical text, so JSON columns that rewrite
numbers (PostgreSQL: ``1e16`` reads back as ``10000000000000000``, ``-0.0`` as
``0.0``) cannot break the chain, while edits of any column are still found."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify
from flags import services
from tests.audit.test_chain import raw_update_after, triggers_off

# Numbers a JSON column does not give back byte for byte.
AWKWARD_NUMBERS = [
    1e16,
    -0.0,
    1.7976931348623157e308,
    5e-324,
    1e-7,
    0.1 + 0.2,
    10**30,
    -(2**63) - 1,
]


def raw_update_canonical(event_id: int, text: str | None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET canonical = %s WHERE id = %s",
            [text, event_id],
        )


@pytest.mark.parametrize("number", AWKWARD_NUMBERS, ids=repr)
def test_audit_chain_verify__merchant_attribute_json_rewrites__ok(
    environments, actor, number
):
    # Given
    merchant = services.merchant_create(
        actor=actor, key="m-rich", attributes={"revenue": number, "list": [number]}
    )
    services.merchant_update(actor=actor, merchant=merchant, name="Rich, renamed")
    # When
    report = audit_chain_verify()
    # Then
    assert (report.ok, report.problem) == (True, "")
    assert report.checked == AuditEvent.objects.count()


def test_audit_chain_verify__number_in_column_edited__detected(environments, actor):
    # Given
    merchant = services.merchant_create(
        actor=actor, key="m-rich", attributes={"revenue": 1e16}
    )
    victim = AuditEvent.objects.get(action="merchant.created", target_id=merchant.pk)
    after = dict(victim.after, attributes={"revenue": 2e16})
    with triggers_off():
        raw_update_after(victim.pk, after)
    # When
    report = audit_chain_verify()
    # Then
    assert (report.ok, report.broken_id) == (False, victim.pk)
    assert "edited" in report.problem


def test_audit_chain_verify__canonical_text_edited__detected(environments, actor):
    # Given
    merchant = services.merchant_create(
        actor=actor, key="m-rich", attributes={"plan": "basic"}
    )
    victim = AuditEvent.objects.get(action="merchant.created", target_id=merchant.pk)
    with triggers_off():
        raw_update_canonical(victim.pk, victim.canonical.replace("basic", "gold"))
    # When
    report = audit_chain_verify()
    # Then
    assert (report.ok, report.broken_id) == (False, victim.pk)
    assert "edited" in report.problem


def test_audit_chain_verify__event_without_canonical__verified_from_columns(
    environments, actor
):
    # Given: events as written before the canonical column existed
    services.merchant_create(actor=actor, key="m-old", attributes={"plan": "basic"})
    events = list(AuditEvent.objects.order_by("id"))
    with triggers_off():
        for event in events:
            raw_update_canonical(event.pk, None)
    # When
    intact = audit_chain_verify()
    with triggers_off():
        raw_update_after(events[-1].pk, {"key": "m-old", "tampered": True})
    tampered = audit_chain_verify()
    # Then
    assert AuditEvent.objects.filter(canonical__isnull=True).count() == len(events)
    assert (intact.ok, intact.checked) == (True, len(events))
    assert (tampered.ok, tampered.broken_id) == (False, events[-1].pk)


def test_record_audit_event__canonical__is_the_hashed_text(environments, actor):
    # Given
    services.merchant_create(actor=actor, key="m-rich", attributes={"revenue": 1e16})
    # When
    event = AuditEvent.objects.order_by("-id").first()
    # Then
    digest = hashlib.sha256((event.prev_hash + event.canonical).encode()).hexdigest()
    assert digest == event.hash
    assert '"revenue":1e+16' in event.canonical
    assert json.loads(event.canonical)["action"] == "merchant.created"


# Text JSON columns can store: no NUL (PostgreSQL refuses it), no lone
# surrogate (not UTF-8; controlplane/api/input.py refuses both at the edge).
_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(AWKWARD_NUMBERS)
    | _text
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4)
    ),
    max_leaves=16,
)
# Merchant attributes: an object of scalars and lists (of any JSON).
_attributes = st.dictionaries(
    _text.filter(lambda key: key != "merchant"),
    _scalars | st.lists(_json, max_size=4),
    max_size=6,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(first=_attributes, second=_attributes)
def test_audit_chain_verify__random_json_through_merchant_service__ok(
    environments, actor, first, second
):
    # Given
    with transaction.atomic():  # each example rolls back its merchant
        merchant = services.merchant_create(actor=actor, key="m-prop", attributes=first)
        services.merchant_update(actor=actor, merchant=merchant, attributes=second)
        # When
        report = audit_chain_verify()
        # Then
        assert (report.ok, report.problem) == (True, "")
        assert report.checked == AuditEvent.objects.count()
        transaction.set_rollback(True)
