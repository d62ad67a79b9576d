"""Every write to flags, states, overrides, merchants and segments.

The admin, commands, API and controller change state only through these.
"""

from flags.services._common import state_snapshot
from flags.services.bulk import merchant_upsert_many  # noqa: F401
from flags.services.flags import (
    environment_create,
    flag_archive,
    flag_create,
    flag_update,
)
from flags.services.overrides import (
    override_remove,
    override_set,
    overrides_purge_expired,
)
from flags.services.registry import (
    merchant_create,
    merchant_update,
    segment_create,
    segment_delete,
    segment_update,
)
from flags.services.states import (
    flag_state_kill,
    flag_state_restore,
    flag_state_restore_snapshot,
    flag_state_serve,
    flag_state_set_enabled,
    flag_state_set_percentage,
    flag_state_update,
    percentage_split,
)
from flags.services.triggers import (
    alert_trigger_authenticate,
    alert_trigger_create,
    alert_trigger_fire,
    alert_trigger_get,
    alert_trigger_list,
    alert_trigger_revoke,
)

__all__ = [
    "alert_trigger_authenticate",
    "alert_trigger_create",
    "alert_trigger_fire",
    "alert_trigger_get",
    "alert_trigger_list",
    "alert_trigger_revoke",
    "environment_create",
    "flag_archive",
    "flag_create",
    "flag_state_kill",
    "flag_state_restore",
    "flag_state_restore_snapshot",
    "flag_state_serve",
    "flag_state_set_enabled",
    "flag_state_set_percentage",
    "flag_state_update",
    "flag_update",
    "merchant_create",
    "merchant_update",
    "override_remove",
    "override_set",
    "overrides_purge_expired",
    "percentage_split",
    "segment_create",
    "segment_delete",
    "segment_update",
    "state_snapshot",
]
