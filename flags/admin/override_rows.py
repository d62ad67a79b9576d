"""The override rows of a flag state page: merchant, variation, expiry, note.

One row per override of the flag state, plus an empty row to add one; the
field cleans to the wanted overrides (``variation`` None for a removal),
which ``flags.admin.targeting_admin.overrides_apply`` hands to the services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from flags.admin import targeting_rows as rows
from flags.admin.targeting_rows import RowError
from flags.admin.targeting_widgets import (
    Posted,
    RowsField,
    RowsWidget,
    posted_text,
    rows_posted,
)


class OverrideRowsWidget(RowsWidget):
    template_name = "admin/flags/widgets/override_rows.html"

    def get_context(self, name: str, value: Any, attrs: Any) -> dict:
        context = super().get_context(name, value, attrs)
        if isinstance(value, Posted):
            shown = [dict(row) for row in value.get("rows", [])]
        else:
            shown = [
                {
                    "merchant": row["merchant"],
                    "variation": row["variation"],
                    "expires_at": local_input(row["expires_at"]),
                    "note": row["note"],
                    "existing": True,
                    "is_live": row["expires_at"] is None
                    or row["expires_at"] > timezone.now(),
                }
                for row in (value or [])
            ]
            shown.append(
                {"merchant": "", "variation": "", "expires_at": "", "note": ""}
            )
        context["rows"] = shown
        context["keys"] = self.keys
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if not rows_posted(data, name):
            return None
        try:
            count = rows.row_count(posted_text(data, f"{name}-rows"), "overrides")
        except RowError as exc:
            return Posted(error=exc.message)
        return Posted(
            rows=[
                {
                    "merchant": posted_text(data, f"{name}-{i}-merchant"),
                    "variation": posted_text(data, f"{name}-{i}-variation"),
                    "expires_at": posted_text(data, f"{name}-{i}-expires_at"),
                    "note": posted_text(data, f"{name}-{i}-note"),
                    "existing": data.get(f"{name}-{i}-existing") == "1",
                    "delete": data.get(f"{name}-{i}-delete") == "on",
                }
                for i in range(count)
            ]
        )


def local_input(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return timezone.localtime(value).strftime("%Y-%m-%dT%H:%M")


def _parse_expiry(text: str, where: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        naive = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"{where}: {text!r} is not a date and time") from None
    if timezone.is_naive(naive):
        return timezone.make_aware(naive, timezone.get_current_timezone())
    return naive


class OverrideRowsField(RowsField):
    """Cleans to a list of wanted overrides: merchant, variation, expiry, note.

    ``remove`` rows come back with ``variation`` None.
    """

    widget = OverrideRowsWidget

    def parse(self, value: Posted) -> list[dict]:
        wanted = []
        seen: set[str] = set()
        for index, row in enumerate(value.get("rows", []), start=1):
            where = f"override {index}"
            merchant = rows.clean_text(row.get("merchant"), f"{where} merchant")
            variation = rows.clean_text(row.get("variation"), f"{where} variation")
            note = rows.clean_text(row.get("note"), f"{where} note")
            expiry_text = rows.clean_text(row.get("expires_at"), f"{where} expiry")
            if not merchant:
                if variation and not row.get("existing"):
                    raise RowError(f"{where}: a merchant key is required")
                continue
            if merchant in seen:
                raise RowError(f"{where}: {merchant} appears twice")
            seen.add(merchant)
            if row.get("delete"):
                wanted.append({"merchant": merchant, "variation": None})
                continue
            if not variation:
                if row.get("existing"):
                    raise RowError(f"{where}: choose a variation (or tick 'remove')")
                raise RowError(f"{where}: choose a variation for {merchant}")
            if variation not in self.keys:
                raise RowError(f"{where}: unknown variation {variation!r}")
            wanted.append(
                {
                    "merchant": merchant,
                    "variation": variation,
                    "expires_at": _parse_expiry(expiry_text, f"{where} expiry"),
                    "expiry_text": expiry_text,
                    "note": note[:500],
                    "existing": bool(row.get("existing")),
                }
            )
        return wanted

    def has_changed(self, initial: Any, data: Any) -> bool:
        """Return True when a row would set or remove an override."""
        if data is None:
            return False
        try:
            wanted = self.clean(data) or []
        except ValidationError:  # a refused row is a change the form reports
            return True
        shown = {
            row["merchant"]: (
                row["variation"],
                row["note"],
                local_input(row["expires_at"]),
            )
            for row in initial or []
        }
        return any(
            row["variation"] is None
            or shown.get(row["merchant"])
            != (row["variation"], row["note"], row["expiry_text"])
            for row in wanted
        )
