"""Demo data: environments, merchants, segments and the flags of DESIGN.md.

``demo_ensure()`` creates what is absent and leaves what exists alone, so it
is safe to run at every start: a second run writes nothing (no audit
events). Everything goes through the services with the SYSTEM actor, so the
audit log and ruleset versions hold as for any other change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from controlplane.audit.actors import SYSTEM
from controlplane.conf import setting
from flags import services
from flags.models import Environment, Flag, Merchant, Segment

ENVIRONMENTS = [("production", "Production", 0), ("staging", "Staging", 1)]

# key, name, tier, country, plan, monthly volume (in the merchant's currency
# units), active. m-1001 is the usual pilot; m-1024 is the inactive one.
MERCHANTS: list[tuple[str, str, str, str, str, int, bool]] = [
    ("m-1001", "Hanbit Coffee Roasters", "gold", "KR", "enterprise", 1_850_000, True),
    ("m-1002", "Seoul Street Eats", "silver", "KR", "growth", 420_000, True),
    ("m-1003", "Busan Marine Supply", "bronze", "KR", "starter", 65_000, True),
    ("m-1004", "Jeju Citrus Farm", "silver", "KR", "growth", 310_000, True),
    ("m-1005", "Gangnam Beauty Lab", "gold", "KR", "enterprise", 2_400_000, True),
    ("m-1006", "Incheon Air Parts", "bronze", "KR", "starter", 48_000, True),
    ("m-1007", "Brooklyn Bagel Co.", "silver", "US", "growth", 275_000, True),
    ("m-1008", "Pacific Outdoor Gear", "gold", "US", "enterprise", 3_100_000, True),
    ("m-1009", "Lone Star Hardware", "bronze", "US", "starter", 92_000, True),
    ("m-1010", "Maple & Main Books", "bronze", "US", "starter", 37_000, True),
    ("m-1011", "Golden Gate Bikes", "silver", "US", "growth", 510_000, True),
    ("m-1012", "Midwest Pet Supply", "gold", "US", "enterprise", 1_420_000, True),
    ("m-1013", "Berliner Brotmanufaktur", "silver", "DE", "growth", 198_000, True),
    ("m-1014", "Hamburg Hafen Logistik", "gold", "DE", "enterprise", 2_750_000, True),
    ("m-1015", "Münchner Radhaus", "bronze", "DE", "starter", 74_000, True),
    ("m-1016", "Kölner Kaffeerösterei", "silver", "DE", "growth", 233_000, True),
    ("m-1017", "Schwarzwald Uhren", "gold", "DE", "enterprise", 1_190_000, True),
    ("m-1018", "Tokyo Stationery House", "silver", "JP", "growth", 388_000, True),
    ("m-1019", "Osaka Ramen Supply", "bronze", "JP", "starter", 81_000, True),
    ("m-1020", "Kyoto Tea Garden", "gold", "JP", "enterprise", 1_640_000, True),
    ("m-1021", "Sapporo Snow Sports", "silver", "JP", "growth", 297_000, True),
    ("m-1022", "Nagoya Robotics Parts", "gold", "JP", "enterprise", 4_050_000, True),
    ("m-1023", "Fukuoka Craft Beer", "bronze", "JP", "starter", 56_000, True),
    ("m-1024", "Daegu Textile Outlet", "bronze", "KR", "starter", 0, False),
]

SEGMENTS = [
    (
        "gold-tier",
        "Gold tier",
        "Merchants on the gold tier.",
        [{"attribute": "tier", "op": "in", "values": ["gold"]}],
    ),
    (
        "korea",
        "Korea",
        "Merchants in South Korea.",
        [{"attribute": "country", "op": "in", "values": ["KR"]}],
    ),
]

FLAGS: list[dict[str, Any]] = [
    {
        "key": "sequential_workflow",
        "name": "Sequential workflow",
        "value_type": "bool",
        "description": "Run order steps one after another. Global off, piloted on one "
        "merchant, then 10% -> 50% -> 100%.",
        "owner": "orders-team",
        "tags": ["orders", "rollout"],
    },
    {
        "key": "enable_supplier_policy",
        "name": "Enable supplier policy",
        "value_type": "bool",
        "description": "Apply supplier policies; rolled out 0 -> 10 -> 50 -> 100% after "
        "its migration.",
        "owner": "supply-team",
        "tags": ["supply", "migration"],
    },
    {
        "key": "policy_resolution_timeout_ms",
        "name": "Policy resolution timeout (ms)",
        "value_type": "number",
        "variations": [
            {"key": "100ms", "value": 100, "name": "100 ms (fast)"},
            {"key": "250ms", "value": 250, "name": "250 ms"},
            {"key": "500ms", "value": 500, "name": "500 ms (patient)"},
        ],
        "off_variation": "100ms",
        "description": "How long policy resolution may take before it falls back.",
        "owner": "supply-team",
        "tags": ["supply", "tuning"],
    },
    {
        "key": "checkout_theme",
        "name": "Checkout theme",
        "value_type": "string",
        "variations": [
            {"key": "classic", "value": "classic", "name": "Classic"},
            {"key": "modern", "value": "modern", "name": "Modern"},
            {"key": "compact", "value": "compact", "name": "Compact"},
        ],
        "off_variation": "classic",
        "description": "Checkout page look: a weighted split, modern for gold-tier merchants.",
        "owner": "web-team",
        "tags": ["web", "ui"],
    },
]

THEME_SPLIT = {
    "split": [
        {"variation": "classic", "weight": 50_000},
        {"variation": "modern", "weight": 30_000},
        {"variation": "compact", "weight": 20_000},
    ]
}
THEME_RULES = [
    {
        "description": "Gold-tier merchants get the modern theme",
        "clauses": [{"op": "segment", "values": ["gold-tier"]}],
        "serve": {"variation": "modern"},
    }
]


@dataclass
class DemoReport:
    """What ``demo_ensure`` created (empty lists: everything was there)."""

    environments: list[str] = field(default_factory=list)
    merchants: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    admin_created: bool = False

    @property
    def created_anything(self) -> bool:
        return bool(
            self.environments
            or self.merchants
            or self.segments
            or self.flags
            or self.admin_created
        )


def _configure_flag(flag: Flag, environments: dict[str, Environment]) -> None:
    """Serve a newly created demo flag as DESIGN.md describes, per environment."""
    production, staging = environments["production"], environments["staging"]
    enable = services.flag_state_set_enabled
    if flag.key == "sequential_workflow":
        # Production: targeting on, default off: ready for a pilot override.
        enable(actor=SYSTEM, flag=flag, environment=production, enabled=True)
        enable(actor=SYSTEM, flag=flag, environment=staging, enabled=True)
        services.flag_state_serve(
            actor=SYSTEM, flag=flag, environment=staging, variation="on"
        )
    elif flag.key == "enable_supplier_policy":
        for environment, percentage in ((production, 0), (staging, 100)):
            enable(actor=SYSTEM, flag=flag, environment=environment, enabled=True)
            services.flag_state_set_percentage(
                actor=SYSTEM, flag=flag, environment=environment, percentage=percentage
            )
    elif flag.key == "policy_resolution_timeout_ms":
        for environment in (production, staging):
            enable(actor=SYSTEM, flag=flag, environment=environment, enabled=True)
            services.flag_state_serve(
                actor=SYSTEM, flag=flag, environment=environment, variation="100ms"
            )
    elif flag.key == "checkout_theme":
        for environment in (production, staging):
            state = flag.states.get(environment=environment)
            services.flag_state_update(
                actor=SYSTEM,
                flag=flag,
                environment=environment,
                expected_version=state.version,
                enabled=True,
                rules=THEME_RULES,
                fallthrough=THEME_SPLIT,
            )


def demo_ensure() -> DemoReport:
    """Create the demo environments, merchants, segments, flags and admin if absent.

    Idempotent: existing rows are left as they are (an operator may have
    changed them), so a second run writes no audit event. A flag's states are
    configured only when this call created the flag.
    """
    report = DemoReport()
    with transaction.atomic():
        environments = {env.key: env for env in Environment.objects.all()}
        for key, name, sort_order in ENVIRONMENTS:
            if key not in environments:
                environments[key] = services.environment_create(
                    actor=SYSTEM, key=key, name=name, sort_order=sort_order
                )
                report.environments.append(key)

        existing_merchants = set(Merchant.objects.values_list("key", flat=True))
        for key, name, tier, country, plan, volume, is_active in MERCHANTS:
            if key in existing_merchants:
                continue
            services.merchant_create(
                actor=SYSTEM,
                key=key,
                name=name,
                is_active=is_active,
                attributes={
                    "tier": tier,
                    "country": country,
                    "plan": plan,
                    "monthly_volume": volume,
                },
            )
            report.merchants.append(key)

        existing_segments = set(Segment.objects.values_list("key", flat=True))
        for key, name, description, clauses in SEGMENTS:
            if key not in existing_segments:
                services.segment_create(
                    actor=SYSTEM,
                    key=key,
                    name=name,
                    clauses=clauses,
                    description=description,
                )
                report.segments.append(key)

        existing_flags = set(Flag.objects.values_list("key", flat=True))
        for spec in FLAGS:
            if spec["key"] in existing_flags:
                continue
            flag = services.flag_create(actor=SYSTEM, **spec)
            _configure_flag(flag, environments)
            report.flags.append(flag.key)

        report.admin_created = _ensure_admin()
    return report


def _ensure_admin() -> bool:
    """Create the demo superuser from the settings when no such user exists."""
    username = setting("DEMO_ADMIN_USERNAME")
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return False
    User.objects.create_superuser(
        username=username, email="", password=setting("DEMO_ADMIN_PASSWORD")
    )
    return True
