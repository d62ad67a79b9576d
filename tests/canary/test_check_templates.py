"""Check templates: named, versioned check sets, expanded into rollouts."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from canary import services
from canary.exceptions import Conflict, InvalidInput, NotFound
from canary.models import CheckTemplate, Rollout
from canary.templates_data import DEFAULT_CHECKS
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from tests.canary.conftest import DEFAULT_PHASES

ERRORS = {
    "name": "errors",
    "provider": "outcomes",
    "spec": {"metric": "error_rate"},
    "comparator": "lt",
    "threshold": 0.05,
}
LATENCY = {
    "name": "latency",
    "provider": "outcomes",
    "mode": "compare",
    "spec": {"metric": "p95_ms"},
    "margin": 0.1,
}


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def _create(name: str = "payments", checks: list | None = None) -> CheckTemplate:
    return services.check_template_create(
        actor=SYSTEM, name=name, checks=checks or [ERRORS], description="pay"
    )


def _rollout(flag, production, merchants=None, **kwargs) -> Rollout:
    return services.rollout_create(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        name="with a template",
        phases=DEFAULT_PHASES,
        **kwargs,
    )


def test_check_template_create__valid__version_1_cleaned_and_audited(db):
    # When
    template = _create()
    # Then
    assert (template.name, template.version, template.reference) == (
        "payments",
        1,
        "payments@1",
    )
    assert template.checks[0]["failure_limit"] == 0  # defaults filled in
    assert template.checks[0]["dry_run"] is False
    (event,) = _events("check_template.created")
    assert event.target_type == "canary.checktemplate"
    assert event.target_id == str(template.pk)
    assert event.after["checks"] == template.checks


@pytest.mark.parametrize(
    "name, checks, field",
    [
        ("bad name!", [ERRORS], "name"),
        ("has@at", [ERRORS], "name"),
        ("", [ERRORS], "name"),
        ("ok", [], "checks"),
        ("ok", {"name": "x"}, "checks"),
        ("ok", [{**ERRORS, "threshold": "high"}], "checks[0].threshold"),
        ("ok", [ERRORS, ERRORS], "checks[1].name"),
        ("ok", [{**ERRORS, "dry_run": "yes"}], "checks[0].dry_run"),
    ],
)
def test_check_template_create__bad_input__invalid_input_with_field(
    db, name, checks, field
):
    # When
    with pytest.raises(InvalidInput) as raised:
        services.check_template_create(actor=SYSTEM, name=name, checks=checks)
    # Then
    assert raised.value.field == field
    assert not CheckTemplate.objects.exists()
    assert not _events("check_template.created")


def test_check_template_create__name_exists__conflict(db):
    # Given
    _create()
    # When
    with pytest.raises(Conflict):
        _create(checks=[LATENCY])
    # Then
    assert CheckTemplate.objects.count() == 1


def test_check_template_update__changed__new_version_old_one_unchanged(db):
    # Given
    first = _create()
    # When
    second = services.check_template_update(
        actor=SYSTEM, name="payments", checks=[ERRORS, LATENCY]
    )
    # Then
    assert second.version == 2 and second.pk != first.pk
    assert second.description == "pay"  # kept from the latest version
    first.refresh_from_db()
    assert [c["name"] for c in first.checks] == ["errors"]
    assert [c["name"] for c in second.checks] == ["errors", "latency"]
    (event,) = _events("check_template.version_created")
    assert event.before["version"] == 1 and event.after["version"] == 2
    assert services.check_template_get("payments").version == 2


def test_check_template_update__identical__same_version_no_event(db):
    # Given
    first = _create()
    # When
    again = services.check_template_update(
        actor=SYSTEM, name="payments", checks=[ERRORS]
    )
    # Then
    assert again.pk == first.pk
    assert CheckTemplate.objects.count() == 1
    assert not _events("check_template.version_created")


def test_check_template_update__unknown_or_bad__refused(db):
    # Given
    _create()
    # When / Then
    with pytest.raises(NotFound):
        services.check_template_update(actor=SYSTEM, name="nope", checks=[ERRORS])
    with pytest.raises(InvalidInput) as raised:
        services.check_template_update(
            actor=SYSTEM, name="payments", checks=[{**ERRORS, "interval": 0}]
        )
    assert raised.value.field == "checks[0].interval"
    assert CheckTemplate.objects.count() == 1


def test_check_template_version__duplicate_row__refused_by_the_database(db):
    # Given
    _create()
    # When / Then
    with pytest.raises(IntegrityError), transaction.atomic():
        CheckTemplate.objects.create(name="payments", version=1, checks=[ERRORS])


def test_check_template_archive__latest_version__get_falls_back_to_previous(db):
    # Given
    _create()
    services.check_template_update(
        actor=SYSTEM, name="payments", checks=[ERRORS, LATENCY]
    )
    # When
    archived = services.check_template_archive(actor=SYSTEM, name="payments", version=2)
    again = services.check_template_archive(actor=SYSTEM, name="payments", version=2)
    # Then
    assert [t.reference for t in archived] == ["payments@2"]
    assert again == []
    assert len(_events("check_template.archived")) == 1
    assert services.check_template_get("payments").version == 1
    assert services.check_template_get("payments", 2).archived is True
    with pytest.raises(Conflict):
        services.check_template_resolve("payments@2")


def test_check_template_archive__every_version__not_found_and_not_listed(db):
    # Given
    _create()
    services.check_template_update(actor=SYSTEM, name="payments", checks=[LATENCY])
    # When
    archived = services.check_template_archive(actor=SYSTEM, name="payments")
    # Then
    assert [t.version for t in archived] == [1, 2]
    with pytest.raises(NotFound, match="archived"):
        services.check_template_get("payments")
    names = [t.name for t in services.check_template_list()]
    assert "payments" not in names
    assert "payments" in [
        t.name for t in services.check_template_list(include_archived=True)
    ]


@pytest.mark.parametrize(
    "name, version, error",
    [
        ("nope", None, NotFound),
        ("payments", 9, NotFound),
        ("payments", -1, InvalidInput),
    ],
)
def test_check_template_archive__unknown_or_bad__refused(db, name, version, error):
    # Given
    _create()
    # When / Then
    with pytest.raises(error):
        services.check_template_archive(actor=SYSTEM, name=name, version=version)
    assert not _events("check_template.archived")


def test_check_template_get__default_not_stored__builtin_version_0(db):
    # When
    builtin = services.check_template_get("default")
    # Then
    assert builtin.pk is None and builtin.version == 0
    assert [c["name"] for c in builtin.checks] == [c["name"] for c in DEFAULT_CHECKS]
    assert "default" in [t.name for t in services.check_template_list()]
    with pytest.raises(Conflict):
        services.check_template_archive(actor=SYSTEM, name="default", version=0)


def test_check_template_get__default_stored__stored_one_and_0_still_builtin(db):
    # Given
    _create(name="default", checks=[ERRORS])
    # When
    stored = services.check_template_get("default")
    builtin = services.check_template_get("default", 0)
    # Then
    assert stored.version == 1 and [c["name"] for c in stored.checks] == ["errors"]
    assert builtin.pk is None and len(builtin.checks) == len(DEFAULT_CHECKS)


@pytest.mark.parametrize("reference", ["", "a@b", "@3", "x@", 12, "a b@1"])
def test_check_template_parse__malformed__invalid_input(reference):
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        services.check_template_parse(reference)
    assert raised.value.field == "check_template"


def test_rollout_create__check_template_and_checks__expanded_and_recorded(
    flag, production, merchants
):
    # Given
    _create(checks=[ERRORS])
    services.check_template_update(
        actor=SYSTEM, name="payments", checks=[ERRORS, LATENCY]
    )
    extra = {**ERRORS, "name": "errors_strict", "threshold": 0.01}
    # When
    rollout = _rollout(flag, production, check_template="payments@1", checks=[extra])
    # Then
    assert rollout.check_template == "payments@1"
    assert list(rollout.checks.order_by("id").values_list("name", flat=True)) == [
        "errors",
        "errors_strict",
    ]
    event = AuditEvent.objects.get(action="rollout.created", target_id=str(rollout.pk))
    assert event.after["check_template"] == "payments@1"


def test_rollout_create__template_latest_then_new_version__rollout_keeps_its_checks(
    flag, production, merchants
):
    # Given
    _create(checks=[ERRORS])
    rollout = _rollout(flag, production, check_template="payments")
    # When
    services.check_template_update(actor=SYSTEM, name="payments", checks=[LATENCY])
    # Then
    assert rollout.check_template == "payments@1"
    assert list(rollout.checks.values_list("name", flat=True)) == ["errors"]


def test_rollout_create__builtin_default__default_checks(flag, production, merchants):
    # When
    rollout = _rollout(flag, production, check_template="default")
    # Then
    assert rollout.check_template == "default@0"
    assert sorted(rollout.checks.values_list("name", flat=True)) == sorted(
        c["name"] for c in DEFAULT_CHECKS
    )


@pytest.mark.parametrize(
    "reference, checks, error, field",
    [
        ("payments", [ERRORS], InvalidInput, "checks[0].name"),
        ("nope", None, NotFound, "check_template"),
        ("payments@7", None, NotFound, "check_template"),
        ("payments@", None, InvalidInput, "check_template"),
    ],
)
def test_rollout_create__bad_check_template__refused_nothing_created(
    flag, production, merchants, reference, checks, error, field
):
    # Given
    _create(checks=[ERRORS])
    # When
    with pytest.raises(error) as raised:
        _rollout(flag, production, check_template=reference, checks=checks)
    # Then
    assert raised.value.field == field
    assert not Rollout.objects.exists()


def test_rollout_create__archived_version__conflict(flag, production, merchants):
    # Given
    _create(checks=[ERRORS])
    services.check_template_archive(actor=SYSTEM, name="payments")
    # When / Then
    with pytest.raises(Conflict):
        _rollout(flag, production, check_template="payments@1")
    with pytest.raises(NotFound):
        _rollout(flag, production, check_template="payments")
    assert not Rollout.objects.exists()


def test_rollout_create_from_template__check_template__plan_with_template_checks(
    flag, production, merchants
):
    # Given
    _create(checks=[LATENCY])
    # When
    rollout = services.rollout_create_from_template(
        actor=SYSTEM,
        template="pilot-10-50-100",
        flag=flag,
        environment=production,
        pilot_merchants=["m-pilot"],
        check_template="payments",
    )
    # Then
    assert rollout.check_template == "payments@1"
    assert list(rollout.checks.values_list("name", flat=True)) == ["latency"]
    assert rollout.phases.count() == 4


def test_rollout_create_from_template__no_checks__default_template_recorded(
    flag, production, merchants
):
    # When: no checks and no template, before and after storing a "default"
    builtin = services.rollout_create_from_template(
        actor=SYSTEM,
        template="pilot-10-50-100",
        flag=flag,
        environment=production,
        pilot_merchants=["m-pilot"],
    )
    services.rollout_abort(rollout_id=builtin.pk, actor=SYSTEM, reason="next")
    _create(name="default", checks=[ERRORS])
    stored = services.rollout_create_from_template(
        actor=SYSTEM,
        template="pilot-10-50-100",
        flag=flag,
        environment=production,
        pilot_merchants=["m-pilot"],
    )
    # Then
    assert builtin.check_template == "default@0"
    assert sorted(builtin.checks.values_list("name", flat=True)) == sorted(
        c["name"] for c in DEFAULT_CHECKS
    )
    assert stored.check_template == "default@1"
    assert list(stored.checks.values_list("name", flat=True)) == ["errors"]


def test_rollout_create_from_template__empty_checks__none_and_no_template(
    flag, production, merchants
):
    # When
    rollout = services.rollout_create_from_template(
        actor=SYSTEM,
        template="pilot-10-50-100",
        flag=flag,
        environment=production,
        pilot_merchants=["m-pilot"],
        checks=[],
    )
    # Then
    assert rollout.check_template == ""
    assert not rollout.checks.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_template_update__four_writers_at_once__four_distinct_versions():
    # Given
    import threading

    from django.db import connection

    _create(checks=[ERRORS])
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def write(threshold: float) -> None:
        try:
            barrier.wait(timeout=10)
            services.check_template_update(
                actor=SYSTEM,
                name="payments",
                checks=[{**ERRORS, "threshold": threshold}],
            )
        except BaseException as exc:  # reported to the test
            errors.append(exc)
        finally:
            connection.close()

    # When
    threads = [threading.Thread(target=write, args=(0.01 * (i + 1),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then: versions 2..5, each with its own audit event, none lost
    assert errors == []
    versions = list(
        CheckTemplate.objects.filter(name="payments")
        .order_by("version")
        .values_list("version", flat=True)
    )
    assert versions == [1, 2, 3, 4, 5]
    assert len(_events("check_template.version_created")) == 4
