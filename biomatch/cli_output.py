"""What every verb prints through: one JSON document (``--json``), rates in tables, the error line,
progress bars on a terminal."""

from __future__ import annotations

import json
import sys

import typer

from .bench import json_default  # one rule for numpy values and paths in JSON, shared with the reports
from .errors import BiomatchError


def emit_json(obj) -> None:
    """Write one JSON document to stdout."""
    typer.echo(json.dumps(obj, indent=2, default=json_default))


def fail(message: str) -> None:
    """Exit 1 with one error line (a JSON error under --json): see biomatch.cli_conventions."""
    raise BiomatchError(message)


def progress_enabled() -> bool:
    """Progress bars only when stderr is a terminal."""
    return sys.stderr.isatty()


def run_with_progress(description: str, total, fn):
    """Call ``fn(progress)`` with a rich progress bar on a terminal, ``fn(None)`` otherwise.

    ``total`` is the bar's length, or a callable giving it (only called when a bar is shown)."""
    if not progress_enabled():
        return fn(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(description, total=total() if callable(total) else total)
        return fn(lambda k: bar.advance(task, k))


def fmt_rate(x) -> str:
    """A rate for a table: four significant digits, ``-`` when there is none."""
    return "-" if x is None else f"{x:.4g}"
