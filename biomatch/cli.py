"""The ``biomatch`` command line: a thin layer over the library.

Every verb that prints results takes ``--json`` (machine-readable output on
stdout). Library errors become one line on stderr and exit code 1; usage
errors exit 2 (typer's convention).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from .errors import BiomatchError

app = typer.Typer(
    name="biomatch",
    help="Fingerprint identification engine: extract, verify, enroll, search, tune, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Fingerprint identification engine: extract, verify, enroll, search, tune, bench."""
    # A callback keeps `biomatch VERB ...` a verb even while only one verb is registered.


def emit_json(obj) -> None:
    """Write one JSON document to stdout."""
    typer.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fail(message: str) -> None:
    """Print one error line on stderr and exit 1."""
    typer.echo(f"biomatch: error: {message}", err=True)
    raise typer.Exit(1)


def progress_enabled() -> bool:
    """Progress bars only when stderr is a terminal."""
    return sys.stderr.isatty()


# ---------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------
@app.command()
def extract(
    image: Path = typer.Argument(..., help="Finger image (PNG, TIFF, BMP, JPEG, WSQ)."),
    ppi: Optional[float] = typer.Option(None, help="Resolution when the file states none (default 500)."),
    position: int = typer.Option(0, help="Finger position, ANSI/NIST-ITL FGP code 0-10."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the template (.bmt biomatch form; .iso / .ansi standard records)."),
    plot: Optional[Path] = typer.Option(None, help="Draw minutiae and the segmentation outline over the image into this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the template as JSON."),
):
    """Extract minutiae from a finger image."""
    from .extraction import extract_detailed

    result = extract_detailed(image, ppi=ppi, position=position)
    template = result.template
    if out is not None:
        _write_template(template, out)
    if plot is not None:
        from .plots import plot_extraction

        plot_extraction(result, plot)
    if as_json:
        doc = template.to_dict()
        doc["source"] = str(image)
        emit_json(doc)
    else:
        typer.echo(
            f"{image}: {len(template)} minutiae, quality {template.quality}, "
            f"{template.width}x{template.height} px at {template.ppi:g} ppi"
        )


def _write_template(template, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix in (".iso", ".ist"):
        from .formats import write_iso

        data = write_iso(template)
    elif suffix in (".ansi", ".378"):
        from .formats import write_ansi

        data = write_ansi(template)
    else:
        data = template.to_bytes()
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise BiomatchError(f"{out}: cannot write template ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------
# synth (biomatch.synthetic)
# ---------------------------------------------------------------------------
synth_app = typer.Typer(help="Generate synthetic fingerprints: images or templates (FVC-style F_I names).", no_args_is_help=True)
app.add_typer(synth_app, name="synth")


def _synth_run(kind: str, fingers: int, impressions: int, seed: int, out: Path, first: int, as_json: bool) -> None:
    from . import synthetic

    generate = synthetic.generate_images if kind == "images" else synthetic.generate_templates
    total = fingers * impressions
    if progress_enabled():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(f"synth {kind}", total=total)
            manifest = generate(out, fingers, impressions, seed, first_finger=first,
                                progress=lambda n: bar.advance(task, n * (1 if kind == "images" else impressions)))
    else:
        manifest = generate(out, fingers, impressions, seed, first_finger=first)
    if as_json:
        emit_json({"out": str(out), "kind": kind, "seed": seed, "fingers": fingers, "impressions": impressions,
                   "files": total, "classes": {c: sum(1 for f in manifest["fingers"].values() if f["class"] == c)
                                                for c in synthetic.FINGER_CLASSES}})
    else:
        typer.echo(f"{out}: {total} synthetic {kind} ({fingers} fingers x {impressions} impressions, seed {seed})")


@synth_app.command("images")
def synth_images(
    fingers: int = typer.Option(10, "--fingers", "-n", help="Number of fingers."),
    impressions: int = typer.Option(4, "--impressions", "-k", help="Impressions per finger."),
    seed: int = typer.Option(0, "--seed", help="Seed; finger i is the same whatever --fingers."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (F_I.png, truth/, manifest.json)."),
    first: int = typer.Option(0, "--first", help="0-based index of the first finger (split a run over machines)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Synthetic finger images (SFinGe-like), 300x400 at 500 ppi, with ground-truth minutiae."""
    _synth_run("images", fingers, impressions, seed, out, first, as_json)


@synth_app.command("templates")
def synth_templates(
    fingers: int = typer.Option(1000, "--fingers", "-n", help="Number of fingers."),
    impressions: int = typer.Option(2, "--impressions", "-k", help="Impressions per finger."),
    seed: int = typer.Option(0, "--seed", help="Seed; finger i is the same whatever --fingers."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (F_I.bmt, manifest.json)."),
    first: int = typer.Option(0, "--first", help="0-based index of the first finger."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Synthetic mated minutiae templates at scale (biomatch .bmt form)."""
    _synth_run("templates", fingers, impressions, seed, out, first, as_json)


def main(argv=None) -> int:
    """Entry point: run the app, turning library errors into one stderr line."""
    warnings.simplefilter("default")
    try:
        app(args=argv, standalone_mode=False)
    except BiomatchError as exc:
        typer.echo(f"biomatch: error: {exc}", err=True)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("biomatch: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("biomatch: interrupted", err=True)
        return 130
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
