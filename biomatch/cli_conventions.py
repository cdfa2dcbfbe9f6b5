"""How the ``biomatch`` command behaves as a Unix tool: exit codes, error lines, output files, warnings.

* Exit status: 0 success, 1 a ``biomatch`` error (bad input, missing store,
  failed check), 2 bad usage (no verb, unknown verb or option, missing or
  malformed argument), 130 interrupted (Ctrl-C).
* An error is one line on stderr (``biomatch: error: ...``); a usage error
  adds one line with the usage and where to find help. Under ``--json`` the
  error is a JSON document on stdout instead:
  ``{"error": {"code": "usage" | "input" | "interrupted" | "internal", "message": ..., "exit_status": N}}``.
* No traceback on any path: an unexpected exception is reported as an
  internal error in one line (``BIOMATCH_DEBUG=1`` shows the traceback).
* Output files are checked before the work starts (:func:`check_output_file`,
  :func:`check_output_dir`) and written to a temporary name beside the
  target, renamed into place only when the verb succeeds
  (:class:`OutputFiles`): an interrupted or failed run leaves no
  half-written file.
* An image without a resolution warns once per run, not once per file.

typer vendors its own copy of click (``typer._click``) in the versions this
package pins; the exception classes are therefore taken from typer's own
exports (:data:`typer.BadParameter`'s bases), not from an installed click.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

import typer

from .errors import BiomatchError

__all__ = [
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "run_app",
    "OutputFiles",
    "check_output_file",
    "check_output_dir",
    "removed_on_failure",
    "OutputDir",
]

#: Exit status of a run that did its job.
EXIT_OK = 0
#: Exit status of a biomatch error (bad input, missing store, a check that found problems).
EXIT_ERROR = 1
#: Exit status of bad usage (click's and POSIX utilities' convention).
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def _click_base(name: str) -> type:
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cls
    raise ImportError(f"typer {getattr(typer, '__version__', '?')}: no {name} among BadParameter's bases")


_ClickException = _click_base("ClickException")
_UsageError = _click_base("UsageError")


class Interrupted(BaseException):
    """Raised by the SIGINT handler: not a KeyboardInterrupt, which typer turns into a silent return."""


def wants_json(argv) -> bool:
    """Whether the command line asks for JSON output (``--json`` before any ``--``)."""
    for a in argv:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


def _emit_error(code: str, message: str, status: int, as_json: bool, hint: str | None = None) -> int:
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": message, "exit_status": status}}) + "\n")
        sys.stdout.flush()
    else:
        sys.stderr.write(f"biomatch: error: {message}\n")
        if hint:
            sys.stderr.write(hint + "\n")
        sys.stderr.flush()
    return status


def _usage_error(exc, as_json: bool) -> int:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "biomatch"
    if type(exc).__name__ == "NoArgsIsHelpError" or exc.format_message() == "Missing command.":
        sub = ctx is not None and ctx.parent is not None
        message = f"{path}: a sub-command is needed" if sub else "no verb given"
    else:
        message = " ".join(exc.format_message().split())
    usage = " ".join(ctx.get_usage().split()) if ctx is not None else "Usage: biomatch [OPTIONS] VERB [ARGS]..."
    return _emit_error("usage", message, EXIT_USAGE, as_json, f"{usage}  (try '{path} -h')")


class _ResolutionWarningsOnce:
    """``warnings.showwarning`` that shows the first missing-resolution warning of a run and counts the rest."""

    def __init__(self, previous):
        self.previous = previous
        self.suppressed = 0
        self.shown = False

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        from .io import ResolutionWarning

        if issubclass(category, ResolutionWarning):
            if self.shown:
                self.suppressed += 1
                return
            self.shown = True
            message = f"{message} (said once per run; give --ppi to set it)"
        sys.stderr.write(f"biomatch: warning: {message}\n")

    def summary(self) -> None:
        if self.suppressed:
            sys.stderr.write(f"biomatch: warning: {self.suppressed} more images without a resolution were read "
                             "at the assumed one\n")


def _raise_interrupted(signum, frame):
    raise Interrupted()


def run_app(app, argv=None) -> int:
    """Run the typer ``app`` on ``argv`` (default ``sys.argv[1:]``) under the conventions above; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(argv)
    hook = _ResolutionWarningsOnce(warnings.showwarning)
    previous_sigint = None
    try:
        previous_sigint = signal.signal(signal.SIGINT, _raise_interrupted)
    except ValueError:  # not the main thread (embedded use): keep the default handler
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.simplefilter("ignore", ResourceWarning)  # for developers, not for the person at the terminal
            warnings.showwarning = hook
            try:
                rv = app(args=argv, standalone_mode=False, prog_name="biomatch")
            except BiomatchError as exc:
                return _emit_error("input", str(exc), EXIT_ERROR, as_json)
            except typer.Exit as exc:
                return int(exc.exit_code or 0)
            except (Interrupted, KeyboardInterrupt, typer.Abort):
                return _emit_error("interrupted", "interrupted", EXIT_INTERRUPTED, as_json)
            except _UsageError as exc:
                return _usage_error(exc, as_json)
            except _ClickException as exc:
                return _emit_error("usage", " ".join(exc.format_message().split()), exc.exit_code, as_json)
            except OSError as exc:
                where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
                return _emit_error("input", f"{where}{exc.strerror or exc}", EXIT_ERROR, as_json)
            except Exception as exc:  # a bug: one line, the traceback only on request
                if os.environ.get("BIOMATCH_DEBUG"):
                    traceback.print_exc()
                return _emit_error("internal", f"internal error: {type(exc).__name__}: {exc} "
                                   "(set BIOMATCH_DEBUG=1 for the traceback)", EXIT_ERROR, as_json)
            finally:
                hook.summary()
        # in non-standalone mode typer returns the code of a typer.Exit raised by a verb (and 130 for a
        # KeyboardInterrupt that got past the handler); verbs themselves return None
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else EXIT_OK
    finally:
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


# ---------------------------------------------------------------------------
# output files
# ---------------------------------------------------------------------------
def check_output_file(path: Path | None, option: str) -> None:
    """Fail before any work when ``path`` cannot be written: a folder, a missing or read-only parent."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise BiomatchError(f"{option} {path}: is a folder, expected a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BiomatchError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BiomatchError(f"{option} {path}: not writable")


def check_output_dir(path: Path | None, option: str) -> None:
    """Fail before any work when the output folder ``path`` can neither be used nor created."""
    if path is None:
        return
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise BiomatchError(f"{option} {path}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise BiomatchError(f"{option} {path}: folder not writable")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BiomatchError(f"{option} {path}: cannot be created ({parent} is not a writable folder)")


class OutputFiles:
    """Temporary names for output files, renamed onto the targets only when the block succeeds.

    ``with OutputFiles(out=path, plot=None) as tmp:`` checks each target
    (:func:`check_output_file`), gives ``tmp["out"]`` a name beside it with the
    same suffix (writers pick the format by suffix), and on success renames
    each temporary that was written onto its target; on an exception or
    Ctrl-C the temporaries are removed and the targets are left untouched.
    """

    def __init__(self, **targets):
        self.targets = {k: (None if v is None else Path(v)) for k, v in targets.items()}
        self.temps: dict = {}

    def __enter__(self) -> dict:
        for key, target in self.targets.items():
            check_output_file(target, f"--{key}")
            self.temps[key] = None if target is None else target.with_name(
                f".{target.stem}.part-{os.getpid()}{target.suffix}")
        return dict(self.temps)

    def __exit__(self, exc_type, exc, tb) -> bool:
        for key, tmp in self.temps.items():
            if tmp is None:
                continue
            if exc_type is None and tmp.exists():
                os.replace(tmp, self.targets[key])
            else:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
        return False


class OutputDir:
    """A temporary folder beside the output folder ``target``; its files are moved into ``target``
    (created) only when the block succeeds, so a failed or interrupted run leaves no half-written
    report there (and files of an earlier run stay as they were)."""

    def __init__(self, target):
        self.target = Path(target)
        self.tmp = self.target.parent / f".{self.target.name}.part-{os.getpid()}"

    def __enter__(self) -> Path:
        check_output_dir(self.target, "--out")
        self.tmp.mkdir(parents=True)
        return self.tmp

    def final(self, path) -> Path:
        """Where a file written into the temporary folder ends up."""
        return self.target / Path(path).relative_to(self.tmp)

    def __exit__(self, exc_type, exc, tb) -> bool:
        import shutil

        try:
            if exc_type is None:
                self.target.mkdir(parents=True, exist_ok=True)
                for f in sorted(self.tmp.iterdir()):
                    os.replace(f, self.target / f.name)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


class removed_on_failure:
    """Context: when ``store`` does not exist yet and the block fails (or is interrupted) before anything
    was recorded in it (an empty audit log), remove the store and the files beside it that the block
    created (WAL, index, features), so that no empty store is left. A store holding a committed record
    (a bulk enrolment failing after its first batches) is kept."""

    def __init__(self, store: Path):
        self.store = Path(store)
        self.existed = self.store.exists()
        folder = self.store.parent
        self.before = set(folder.iterdir()) if folder.is_dir() else set()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self.existed and _holds_no_record(self.store):
            folder = self.store.parent
            for f in set(folder.iterdir()) - self.before if folder.is_dir() else ():
                if f.name.startswith(self.store.name) and f.is_file():
                    f.unlink(missing_ok=True)
        return False


def _holds_no_record(store: Path) -> bool:
    """Whether ``store`` is absent, or a SQLite file whose audit log is empty or missing (read-only look)."""
    import sqlite3

    if not store.is_file():
        return True
    try:
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            return con.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
        finally:
            con.close()
    except sqlite3.Error as exc:
        return "no such table" in str(exc)
