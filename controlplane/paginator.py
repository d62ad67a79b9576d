"""An admin paginator that does not count a million rows on every page.

Django's changelist asks its paginator for ``count``: a ``COUNT(*)`` over
the whole table when no filter is applied. On PostgreSQL a large table's
row count is estimated instead from the planner's statistics
(``pg_class.reltuples``, kept current by autovacuum); filtered lists and
small tables are still counted exactly.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Tables estimated above this many rows are not counted exactly.
ESTIMATE_ABOVE = 100_000


class EstimatedCountPaginator(Paginator):
    """A Paginator whose unfiltered count on PostgreSQL is the estimate."""

    @cached_property
    def count(self) -> int:
        estimate = _estimate(self.object_list)
        if estimate is not None and estimate > ESTIMATE_ABOVE:
            return estimate
        return super().count


def _estimate(queryset) -> int | None:
    query = getattr(queryset, "query", None)
    if query is None or query.where or query.distinct or query.combinator:
        return None  # only a whole table has an estimate
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None
