"""Change notices: one NOTIFY per burst while the poll covers the rest."""

from __future__ import annotations

import pytest
from django.db import connection

from controlplane.audit.actors import SYSTEM
from flags import propagation, services

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _listen():
    """A second connection LISTENing on the channel; returns a drain function."""
    import psycopg

    settings = connection.settings_dict
    listener = psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    )
    listener.execute(f"LISTEN {propagation.CHANNEL}")

    def drain() -> list[str]:
        return [notice.payload for notice in listener.notifies(timeout=0.5)]

    return listener, drain


def _burst(settings, count: int, **conf) -> list[str]:
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, **conf}
    environment = services.environment_create(actor=SYSTEM, key="production")
    flag = services.flag_create(actor=SYSTEM, key="burst")
    listener, drain = _listen()
    propagation._notified_at.clear()  # the set-up's own notices are past
    try:
        for step in range(count):
            services.flag_state_set_percentage(
                actor=SYSTEM, flag=flag, environment=environment, percentage=step + 1
            )
        return drain()
    finally:
        listener.close()


def test_burst__fast_poll__one_notice(settings):
    # Given: receivers poll every 0.25 s; When: five changes within the gap
    notices = _burst(settings, 5, RULESET_POLL_INTERVAL=0.25, RULESET_NOTIFY_MIN_GAP=60)
    # Then: the first is notified, the poll brings the others
    assert len(notices) == 1


def test_burst__slow_poll__every_change_notified(settings):
    # Given: receivers that rely on notices (poll every hour)
    notices = _burst(settings, 5, RULESET_POLL_INTERVAL=3600)
    # Then: no notice is skipped
    assert len(notices) == 5


def test_burst__gap_off__every_change_notified(settings):
    notices = _burst(settings, 3, RULESET_POLL_INTERVAL=0.25, RULESET_NOTIFY_MIN_GAP=0)
    assert len(notices) == 3
