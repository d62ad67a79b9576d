"""Read a rendered admin form as a browser would post it back.

``form_fields(html, form_id)`` returns the successful controls of one form:
text and hidden inputs, checked boxes and radios, selected options and
textareas, as a mapping of name to list of values.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any


class _FormReader(HTMLParser):
    def __init__(self, form_id: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.depth = 0
        self.fields: dict[str, list[str]] = {}
        self._select: str | None = None
        self._select_multiple = False
        self._select_first: str | None = None
        self._select_chosen = False
        self._option: dict | None = None
        self._textarea: str | None = None
        self._text: list[str] = []

    def _add(self, name: str, value: str) -> None:
        self.fields.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            if not self.inside and (
                self.form_id is None or a.get("id") == self.form_id
            ):
                self.inside = True
            return
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self._add(name, a.get("value", "on"))
                return
            self._add(name, a.get("value", ""))
        elif tag == "select" and name:
            self._select = name
            self._select_multiple = "multiple" in a
            self._select_first = None
            self._select_chosen = False
        elif tag == "option" and self._select:
            self._option = a
            self._text = []
        elif tag == "textarea" and name:
            self._textarea = name
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._textarea is not None or self._option is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
            self.form_id = "\0done"  # only the first matching form
        if not self.inside and tag != "form":
            return
        if tag == "option" and self._option is not None and self._select:
            value = self._option.get("value", "".join(self._text).strip())
            if "disabled" not in self._option:
                if self._select_first is None:
                    self._select_first = value
                if "selected" in self._option:
                    self._add(self._select, value)
                    self._select_chosen = True
            self._option = None
        elif tag == "select" and self._select:
            if not self._select_chosen and not self._select_multiple:
                if self._select_first is not None:
                    self._add(self._select, self._select_first)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            text = "".join(self._text)
            self._add(self._textarea, text[1:] if text.startswith("\n") else text)
            self._textarea = None


def form_fields(html: str, form_id: str | None = None) -> dict[str, Any]:
    """Return the controls a browser would post from the form ``form_id``."""
    reader = _FormReader(form_id)
    reader.feed(html)
    return {
        name: values[0] if len(values) == 1 else values
        for name, values in reader.fields.items()
    }
