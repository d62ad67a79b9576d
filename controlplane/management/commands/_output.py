"""What every project command shares about its output.

* ``OutputCommand``, the base of the project's commands: while it runs, log
  records go to standard error only from WARNING up (``-v 2``: INFO, ``-v
  3``: DEBUG; an explicit ``LOG_LEVEL`` environment variable wins), so log
  lines, the in-process (eager) Celery tasks' included, never mix into
  what the command prints; ``NO_COLOR`` turns colour off as ``--no-color``
  does.
* ``console_for``: a rich console that colours only on a terminal (or with
  ``--force-color``), never with ``NO_COLOR`` or ``--no-color``.
* ``render`` and ``table``: print rich renderables, and a table whose
  header is drawn in ASCII when the output is piped or captured.

Django skips modules of a commands package whose name starts with ``_``:
this is no command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.management.base import BaseCommand, OutputWrapper
from rich import box
from rich.console import Console
from rich.table import Table

# A table head underlined with '-': safe in any encoding when piped or logged.
PLAIN_BOX = box.Box(
    "    \n    \n -- \n    \n    \n    \n    \n    \n",
    ascii=True,
)

_LEVELS = {0: logging.WARNING, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


def no_color_requested() -> bool:
    """Return whether the ``NO_COLOR`` convention (no-color.org) asks for
    no colour: the variable is set and not empty."""
    return bool(os.environ.get("NO_COLOR"))


@contextlib.contextmanager
def command_logging(verbosity: int) -> Iterator[None]:
    """Log from WARNING up (INFO at verbosity 2, DEBUG at 3) while the block
    runs, then restore the level; an explicit ``LOG_LEVEL`` wins.

    The handlers themselves write to standard error (``LOGGING`` in
    ``controlplane.settings``): standard output is the command's own.
    """
    root = logging.getLogger()
    before = root.level
    if not os.environ.get("LOG_LEVEL"):
        root.setLevel(_LEVELS.get(verbosity, logging.DEBUG))
    try:
        yield
    finally:
        root.setLevel(before)


def _raw(stream: Any) -> Any:
    # OutputWrapper appends a newline to every write: rich writes partial
    # lines (and cursor moves in a live view), so it gets the stream itself.
    return stream._out if isinstance(stream, OutputWrapper) else stream


def is_terminal(stream: Any) -> bool:
    """Return whether ``stream`` is a terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


def console_for(
    stream: Any,
    *,
    file: Any = None,
    no_color: bool = False,
    force_color: bool = False,
    width: int | None = None,
    soft_wrap: bool = False,
) -> Console:
    """Return a rich console for ``stream`` (writing to ``file`` if given).

    Colour and terminal control codes only on a terminal, or with
    ``force_color``; never with ``no_color`` or ``NO_COLOR`` (unless forced).
    Off a terminal the width is ``width``, else ``COLUMNS``, else 120.
    """
    tty = is_terminal(stream)
    colour = force_color or (tty and not no_color and not no_color_requested())
    if width is None and not tty:
        try:
            width = int(os.environ.get("COLUMNS", "") or 120)
        except ValueError:
            width = 120
    return Console(
        file=file if file is not None else _raw(stream),
        force_terminal=tty or force_color,
        force_interactive=tty,
        no_color=not colour,
        color_system="auto" if colour else None,
        width=width,
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=soft_wrap,
    )


def table(title: str | None, *columns: str, tty: bool) -> Table:
    """Return a rich table with a header row of ``columns`` (ASCII off a
    terminal); cells fold rather than being cut."""
    result = Table(
        title=title,
        box=box.SIMPLE_HEAD if tty else PLAIN_BOX,
        title_justify="left",
        pad_edge=False,
        show_edge=False,
    )
    for column in columns:
        result.add_column(column, overflow="fold")
    return result


def _verbosity_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in action.choices.values():
            if "-v" not in sub._option_string_actions:
                sub.add_argument(
                    "-v",
                    "--verbosity",
                    type=int,
                    choices=[0, 1, 2, 3],
                    # Absent: the value given before the subcommand, if any.
                    default=argparse.SUPPRESS,
                    help="Verbosity: 2 also prints INFO logs (on stderr).",
                )
            _verbosity_everywhere(sub)


class OutputCommand(BaseCommand):
    """A project command: quiet logs, colour only where it belongs, and
    ``print``/``table``/``rows`` for rich output."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        """Return Django's parser, with ``-v``/``--verbosity`` accepted after
        a subcommand too (``rollout start 1 -v 2``), not only before it."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        _verbosity_everywhere(parser)
        return parser

    def execute(self, *args: Any, **options: Any) -> Any:
        if no_color_requested() and not options.get("force_color"):
            options["no_color"] = True
        self._no_color = bool(options.get("no_color"))
        self._force_color = bool(options.get("force_color"))
        with command_logging(int(options.get("verbosity", 1))):
            return super().execute(*args, **options)

    # -- output helpers ------------------------------------------------------

    @property
    def is_tty(self) -> bool:
        return is_terminal(self.stdout)

    def console(
        self, *, file: Any = None, width: int | None = None, soft_wrap: bool = False
    ) -> Console:
        """Return a rich console for this command's standard output."""
        return console_for(
            self.stdout,
            file=file,
            width=width,
            no_color=getattr(self, "_no_color", False),
            force_color=getattr(self, "_force_color", False),
            soft_wrap=soft_wrap,
        )

    def print(self, *renderables: Any) -> None:
        """Render with rich: colours on a terminal, plain text otherwise
        (and no padding to the console's width)."""
        buffer = io.StringIO()
        console = self.console(file=buffer)
        for renderable in renderables:
            console.print(renderable)
        text = buffer.getvalue()
        if not self.is_tty:
            text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
        self.stdout.write(text, ending="")

    def table(self, title: str | None, *columns: str) -> Table:
        """Return a table with a header row; fill it and ``print`` it."""
        return table(title, *columns, tty=self.is_tty)

    def rows(
        self,
        title: str | None,
        columns: Iterable[str],
        rows: Iterable[Iterable[Any]],
        *,
        empty: str,
    ) -> int:
        """Print ``rows`` under a header of ``columns`` (``empty`` when there
        are none); return how many rows were printed."""
        result = self.table(title, *columns)
        count = 0
        for row in rows:
            result.add_row(*("" if cell is None else str(cell) for cell in row))
            count += 1
        if not count:
            self.stdout.write(empty)
            return 0
        self.print(result)
        return count
