from controlplane.audit.models import AuditEvent
from flags import engine, mappers, services


def test_override_add__one_merchant__only_that_merchant_gets_on(
    production, flag_factory, merchant_factory, actor
):
    # Given
    flag = flag_factory("sequential_workflow")
    pilot, other = merchant_factory("m-pilot"), merchant_factory("m-other")
    services.flag_state_set_enabled(
        actor=actor, flag=flag, environment=production, enabled=True
    )
    # When
    services.override_set(
        actor=actor, flag=flag, environment=production, merchant=pilot, variation="on"
    )
    # Then
    ruleset = mappers.ruleset_compile(production)
    hit = engine.evaluate(ruleset, "sequential_workflow", {"merchant": pilot.key})
    miss = engine.evaluate(ruleset, "sequential_workflow", {"merchant": other.key})
    assert (hit.value, hit.reason, hit.level) == (True, "TARGETING_MATCH", "override")
    assert (miss.value, miss.reason, miss.level) == (False, "STATIC", "default")
    assert (
        AuditEvent.objects.filter(action="override.created", actor_name="alice").count()
        == 1
    )
