"""The ``biomatch`` command line: a thin layer over the library.

Every verb that prints results takes ``--json`` (machine-readable output on
stdout). Exit codes, error lines (JSON under ``--json``), Ctrl-C, output
files and warnings follow :mod:`biomatch.cli_conventions`: 0 success, 1 a
biomatch error, 2 bad usage, 130 interrupted; no traceback.

The typer app is assembled here from the verb modules:
:mod:`biomatch.cli_prints` (extract, verify, synth),
:mod:`biomatch.cli_evaluate` (tune, calibrate, bench),
:mod:`biomatch.cli_subjects` (enroll, search, delete, update, import, info,
demo) and :mod:`biomatch.cli_admin` (check, check-transaction, backup,
restore, audit). They share :mod:`biomatch.cli_output` (JSON, progress),
:mod:`biomatch.cli_inputs` (prints, fingers, transactions, folders) and
:mod:`biomatch.cli_stores` (opening a store).
"""

from __future__ import annotations

import sys

import typer

from .cli_admin import (audit_app, audit_export, audit_head, audit_list, audit_verify, backup, check,
                        check_transaction, restore)
from .cli_conventions import run_app
from .cli_evaluate import bench_accuracy, bench_app, bench_identification, bench_speed, calibrate, tune
from .cli_output import emit_json, fail, progress_enabled, run_with_progress
from .cli_prints import extract, synth_app, synth_images, synth_templates, verify
from .cli_subjects import delete, demo, enroll, import_store, info, search, update

__all__ = [
    "app", "main", "emit_json", "fail", "progress_enabled", "run_with_progress",
    "extract", "verify", "synth_app", "synth_images", "synth_templates",
    "tune", "calibrate", "bench_app", "bench_accuracy", "bench_identification", "bench_speed",
    "enroll", "search", "delete", "update", "import_store", "info", "demo",
    "check", "check_transaction", "backup", "restore",
    "audit_app", "audit_list", "audit_verify", "audit_head", "audit_export",
]

#: -h works wherever --help does (sub-commands inherit the context setting).
_CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="biomatch",
    help="Fingerprint identification engine: extract, verify, enroll, search, tune, bench.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=_CONTEXT,
)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"biomatch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """Fingerprint identification engine: extract, verify, enroll, search, tune, bench."""
    # A callback keeps `biomatch VERB ...` a verb even while only one verb is registered.


#: The verbs, in the order ``biomatch --help`` lists them.
_VERBS = (("extract", extract), ("verify", verify), ("tune", tune), ("calibrate", calibrate),
          ("enroll", enroll), ("search", search), ("delete", delete), ("update", update),
          ("import", import_store), ("info", info), ("check", check), ("check-transaction", check_transaction),
          ("backup", backup), ("restore", restore), ("demo", demo))
#: The verb groups (``biomatch synth images``, ...), listed after the verbs.
_GROUPS = (("synth", synth_app), ("bench", bench_app), ("audit", audit_app))
for _name, _verb in _VERBS:
    app.command(_name)(_verb)
for _name, _group in _GROUPS:
    app.add_typer(_group, name=_name)


def main(argv=None) -> int:
    """Entry point: run the app under :mod:`biomatch.cli_conventions` (exit 0/1/2/130, one error line)."""
    return run_app(app, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
