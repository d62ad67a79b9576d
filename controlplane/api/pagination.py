"""The one pagination every list endpoint uses."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request


class Pagination(LimitOffsetPagination):
    """Limit/offset pages; absurd offsets are clamped instead of failing."""

    default_limit = 100
    max_limit = 1000
    max_offset = 10**9

    def get_offset(self, request: Request) -> int:
        return min(super().get_offset(request), self.max_offset)
