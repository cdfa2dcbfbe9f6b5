"""Verbs on single prints: ``extract`` (image -> template), ``verify`` (1:1 comparison) and the
``synth`` group (synthetic images and templates, :mod:`biomatch.synthetic`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_conventions import OutputFiles, check_output_dir
from .cli_inputs import load_print
from .cli_output import emit_json, run_with_progress
from .errors import BiomatchError


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

    with OutputFiles(out=out, plot=plot) as tmp:
        result = extract_detailed(image, ppi=ppi, position=position)
        template = result.template
        if out is not None:
            _write_template(template, tmp["out"])
        if plot is not None:
            from .plots import plot_extraction

            plot_extraction(result, tmp["plot"])
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
def verify(
    a: Path = typer.Argument(..., help="First print: image or template file (ISO 19794-2, ANSI 378, biomatch .bmt)."),
    b: Path = typer.Argument(..., help="Second print: image or template file."),
    ppi: Optional[float] = typer.Option(None, help="Resolution of images that state none (default 500)."),
    plot: Optional[Path] = typer.Option(None, help="Draw both prints side by side with paired minutiae joined into this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print score, estimated FMR and pairs as JSON."),
):
    """Compare two prints: raw score, its estimated false match rate, paired minutiae."""
    from .calibration import format_fmr
    from .scoring import verify as _verify

    with OutputFiles(plot=plot) as tmp:
        ta, ra = load_print(a, ppi)
        tb, rb = load_print(b, ppi)
        match = _verify(ta, tb)
        if plot is not None:
            from .plots import plot_pairs

            plot_pairs(ta, tb, match, tmp["plot"], names=(a.name, b.name),
                       images=(ra.image.pixels if ra else None, rb.image.pixels if rb else None))
    if as_json:
        doc = match.to_dict()
        doc.update({"a": str(a), "b": str(b), "minutiae_a": len(ta), "minutiae_b": len(tb)})
        emit_json(doc)
    else:
        fmr = "n/a (no calibration)" if match.fmr != match.fmr else format_fmr(match.fmr, match.fmr_is_bound)
        typer.echo(f"{a.name} vs {b.name}: score {match.score:.4f}, estimated FMR {fmr}; "
                   f"{match.n_pairs} minutiae pairs agree under the matcher's alignment "
                   f"({len(ta)} / {len(tb)} minutiae)")


synth_app = typer.Typer(help="Generate synthetic fingerprints: images or templates (FVC-style F_I names).")


def _synth_run(kind: str, fingers: int, impressions: int, seed: int, out: Path, first: int, as_json: bool, workers: int = 1) -> None:
    from functools import partial

    from . import synthetic

    check_output_dir(out, "--out")
    generate = partial(synthetic.generate_images, workers=workers) if kind == "images" else synthetic.generate_templates
    total = fingers * impressions
    manifest = run_with_progress(f"synth {kind}", total, lambda progress: generate(
        out, fingers, impressions, seed, first_finger=first, progress=progress))
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
    workers: int = typer.Option(1, "--workers", "-j", help="Processes to use; the output does not depend on it."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Synthetic finger images (SFinGe-like), 300x400 at 500 ppi, with ground-truth minutiae."""
    _synth_run("images", fingers, impressions, seed, out, first, as_json, workers)


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
