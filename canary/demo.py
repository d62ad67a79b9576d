"""Demo rollout: a draft of sequential_workflow in production, ready to start.

``demo_rollout_ensure()`` is called by ``demo_project_ensure`` after
``flags.demo.demo_ensure``
of every demo start. It creates the draft only when the flag has never had
a rollout in production, so a second run writes nothing, and an operator's
own rollouts are left alone. Phases are short (``demo-fast``: pilot m-1001,
10%, 50%, 100%, 20 s at least each) and the default check set
(``canary.templates_data.DEFAULT_CHECKS``) watches the outcome events apps
report: each merchant's error rate and p95 latency against its own baseline
captured at start (``manage.py simulate --history`` reports the look-back,
then plays the app). The percentage phases advance once both checks say
"not worse"; the pilot after its 20 s unless one says "worse".
"""

from __future__ import annotations

from canary.models import Rollout
from canary.templates_data import DEFAULT_CHECKS
from controlplane.audit.actors import SYSTEM
from flags.demo import DemoReport

FLAG = "sequential_workflow"
ENVIRONMENT = "production"
TEMPLATE = "demo-fast"
PILOT = ["m-1001"]
NAME = "sequential_workflow demo: pilot -> 10% -> 50% -> 100%"
# The default check set (error rate and p95 latency, each merchant against
# its own baseline; margins and alpha unchanged), looked at every 5 s
# instead of 30 s: the demo's phases last 20 s. The bounds are valid however
# often the controller looks, so looking more often costs no confidence.
CHECKS: list[dict] = [{**check, "interval": 5} for check in DEFAULT_CHECKS]


def demo_rollout_ensure() -> Rollout | None:
    """Create the demo's draft rollout if the flag never had one; return it.

    Return None (and write nothing) when the flag, the environment or the
    pilot merchant is missing, or a rollout of the flag already exists.
    """
    from canary.services import rollout_create_from_template
    from flags.models import Environment, Flag, Merchant

    flag = Flag.objects.filter(key=FLAG, archived=False).first()
    environment = Environment.objects.filter(key=ENVIRONMENT).first()
    if flag is None or environment is None:
        return None
    if Rollout.objects.filter(flag=flag, environment=environment).exists():
        return None
    if Merchant.objects.filter(key__in=PILOT, is_active=True).count() != len(PILOT):
        return None
    return rollout_create_from_template(
        actor=SYSTEM,
        template=TEMPLATE,
        flag=flag,
        environment=environment,
        pilot_merchants=PILOT,
        checks=CHECKS,
        name=NAME,
    )


def demo_project_ensure() -> DemoReport:
    """Create the whole demo if absent: flags data, then the draft rollout.

    Lives in canary, the top of the dependency chain (canary -> rollback ->
    flags), so the flags app never imports canary.
    """
    from flags.demo import demo_ensure

    report = demo_ensure()
    demo_rollout_ensure()
    return report
