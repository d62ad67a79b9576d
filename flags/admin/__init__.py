"""The flags admin: an interface over ``flags.services``.

No admin path saves or deletes a domain row through the ORM. Adds, changes,
deletes and actions call a service with the admin user as the actor, so the
audit log records who did it. A ``DomainError`` from a service becomes a form
error (add/change), or an error message (delete, actions); never a 500.

Split by subject: ``base`` (service-backed ModelAdmin, state actions,
filters, inlines), ``flag_admin`` (flags, flag states, overrides) and
``registry_admin`` (merchants, segments, environments). Importing the
package registers every model admin.
"""

import flags.admin.trigger_admin  # noqa: F401  (alert triggers)
from flags.admin import flag_admin, registry_admin  # noqa: F401  (registers the admins)
from flags.admin.base import ReadOnlyInline, ServiceModelAdmin

__all__ = ["ReadOnlyInline", "ServiceModelAdmin"]
