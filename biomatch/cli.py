"""The ``biomatch`` command line: a thin layer over the library.

Every verb that prints results takes ``--json`` (machine-readable output on
stdout). Exit codes, error lines (JSON under ``--json``), Ctrl-C, output
files and warnings follow :mod:`biomatch.cli_conventions`: 0 success, 1 a
biomatch error, 2 bad usage, 130 interrupted; no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_conventions import OutputDir, OutputFiles, check_output_dir, check_output_file, removed_on_failure, run_app
from .errors import BiomatchError

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


# ---------------------------------------------------------------------------
# verify (biomatch.scoring)
# ---------------------------------------------------------------------------
def _load_print(path: Path, ppi: Optional[float]):
    """A template file (ISO 19794-2 / ANSI 378 / biomatch, told by its content:
    :func:`biomatch.formats.is_template`, the library's rule) or an image to extract."""
    from .formats import is_template

    if is_template(path):
        from .formats import load_template

        return load_template(path), None
    from .extraction import extract_detailed

    result = extract_detailed(path, ppi=ppi)
    return result.template, result


@app.command()
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
        ta, ra = _load_print(a, ppi)
        tb, rb = _load_print(b, ppi)
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


# ---------------------------------------------------------------------------
# synth (biomatch.synthetic)
# ---------------------------------------------------------------------------
synth_app = typer.Typer(help="Generate synthetic fingerprints: images or templates (FVC-style F_I names).")
app.add_typer(synth_app, name="synth")


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


# ---------------------------------------------------------------------------
# tune, calibrate, bench (biomatch.evaluation, biomatch.calibration, biomatch.bench)
# ---------------------------------------------------------------------------
def _scores_with_progress(source: Path, protocol: str, ppi: Optional[float]):
    from . import bench

    if not source.is_dir():  # a scores file: nothing to extract
        return bench.load_scores_source(source, protocol=protocol, ppi=ppi)
    return run_with_progress("extract", lambda: len(bench.list_dataset(source, ppi)),
                             lambda progress: bench.load_scores_source(source, protocol=protocol, ppi=ppi,
                                                                       progress=progress))


def _fmt_rate(x) -> str:
    return "-" if x is None else f"{x:.4g}"


@app.command()
def tune(
    source: Path = typer.Argument(..., help="Scores file (CSV/JSON: probe, reference, score, mated) or FVC-style dataset folder."),
    target_fmr: Optional[float] = typer.Option(None, "--target-fmr", help="Choose the threshold for this per-comparison FMR."),
    target_fpir: Optional[float] = typer.Option(None, "--target-fpir", help="1:N: choose for this FPIR (needs --gallery-size)."),
    gallery_size: Optional[int] = typer.Option(None, "--gallery-size", help="1:N gallery size N."),
    protocol: str = typer.Option("all", help="Impostor protocol for a dataset folder: all | fvc."),
    ppi: Optional[float] = typer.Option(None, help="Resolution of the dataset images (default: known FVC value or 500)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Write the chosen threshold into this JSON config file."),
    store: Optional[Path] = typer.Option(None, "--store", help="Write the chosen threshold into this existing gallery store (audited)."),
    create: bool = typer.Option(False, "--create", help="Create --store when it does not exist."),
    gallery: str = typer.Option("default", "--gallery", help="Gallery whose threshold --store sets."),
    operator: str = typer.Option("cli", "--operator", help="Operator recorded in the audit trail."),
    as_json: bool = typer.Option(False, "--json", help="Print the table and the chosen threshold as JSON."),
):
    """Operating point table (threshold, FMR with CI, FNMR per FMR target) and the chosen threshold."""
    from . import bench

    check_output_file(config, "--config")
    if not create:
        _existing_store_path(store)
    scores, _ = _scores_with_progress(source, protocol, ppi)
    table = bench.operating_table(scores)
    chosen = None
    if target_fmr is not None or target_fpir is not None:
        chosen = bench.tune_scores(scores, target_fmr=target_fmr, target_fpir=target_fpir,
                                   gallery_size=gallery_size)
    elif gallery_size is not None or config is not None or store is not None:
        fail("--target-fmr or --target-fpir is required to choose a threshold")
    written = []
    if chosen is not None and config is not None:
        written.append(str(bench.write_threshold_config(chosen, config, source=str(source))))
    if chosen is not None and store is not None:
        written.append(_store_threshold(chosen, store, gallery, operator, create))
    if as_json:
        emit_json({"source": str(source), "n_mated": int(scores.mated.sum()), "n_nonmated": int((~scores.mated).sum()),
                   "table": table, "threshold": None if chosen is None else chosen.to_dict(), "written": written})
        return
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"Operating points: {source} ({int(scores.mated.sum())} mated, "
                      f"{int((~scores.mated).sum())} non-mated; accept when score >= threshold)")
    for col in ("target FMR", "threshold", "FMR (k/n)", "FMR 95% CI", "FNMR", "FNMR 95% CI"):
        tab.add_column(col, justify="right")
    for r in table:
        if r["supported"]:
            tab.add_row(f"{r['target_fmr']:g}", f"{r['value']:.6g}",
                        f"{_fmt_rate(r['fmr'])} ({r['false_matches']}/{r['n_nonmated']})",
                        f"[{_fmt_rate(r['fmr_ci'][0])}, {_fmt_rate(r['fmr_ci'][1])}]",
                        f"{_fmt_rate(r['fnmr'])}", f"[{_fmt_rate(r['fnmr_ci'][0])}, {_fmt_rate(r['fnmr_ci'][1])}]")
        else:
            tab.add_row(f"{r['target_fmr']:g}", "-", f"needs >= {r['min_nonmated']} non-mated", "", "", "")
    console = Console()
    console.print(tab)
    if chosen is not None:
        line = (f"chosen threshold {chosen.value:.6g} for target FMR {chosen.target_fmr:.3g}: FMR {chosen.fmr:.4g} "
                f"({chosen.false_matches}/{chosen.n_nonmated}, {chosen.ci_method} CI [{chosen.fmr_ci[0]:.3g}, "
                f"{chosen.fmr_ci[1]:.3g}]), FNMR {chosen.fnmr:.4g} ({chosen.false_non_matches}/{chosen.n_mated})")
        if chosen.gallery_size is not None:
            line += f", FPIR {chosen.fpir:.4g} on N={chosen.gallery_size}"
        console.print(line)
        for w in written:
            console.print(f"written to {w}")


def _store_threshold(threshold, store: Path, gallery: str, operator: str, create: bool) -> str:
    """Record the threshold in a gallery store through the gallery's audited setter."""
    with _store_for_writing(store, create) as g:
        seq = g.set_threshold(threshold, gallery=gallery, operator=operator)
    return f"{store} (gallery {gallery}, audit record {seq})"


@app.command()
def calibrate(
    source: Path = typer.Argument(..., help="Non-mated scores (scores file; mated rows are ignored) or FVC-style dataset folder."),
    out: Path = typer.Option(Path("calibration.json"), "--out", "-o", help="Calibration JSON to write."),
    source_name: Optional[str] = typer.Option(None, "--source", help="Provenance recorded in the fit (default: SOURCE path)."),
    matcher_version: Optional[str] = typer.Option(None, "--matcher-version", help="Matcher version of the scores (default: this biomatch's)."),
    protocol: str = typer.Option("all", help="Impostor protocol for a dataset folder: all | fvc."),
    ppi: Optional[float] = typer.Option(None, help="Resolution of the dataset images."),
    store: Optional[Path] = typer.Option(None, "--store", help="Also store the calibration in this existing gallery store (audited)."),
    create: bool = typer.Option(False, "--create", help="Create --store when it does not exist."),
    operator: str = typer.Option("cli", "--operator", help="Operator recorded in the audit trail (with --store)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fit summary as JSON."),
):
    """Refit the score -> FMR calibration from a site's own non-mated scores."""
    from .calibration import Calibration

    with OutputFiles(out=out) as tmp:
        if not create:
            _existing_store_path(store)
        scores, _ = _scores_with_progress(source, protocol, ppi)
        if matcher_version is None:
            from .scoring import MATCHER_VERSION as matcher_version
        cal = Calibration.fit(scores.score[~scores.mated], source=source_name or str(source),
                              matcher_version=matcher_version)
        cal.save(tmp["out"])
    if store is not None:
        with _store_for_writing(store, create) as g:
            g.set_calibration(cal, operator=operator)
    floor = cal.fmr_floor
    points = {f"{f:g}": cal.threshold_for(f) for f in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6) if f >= floor}
    unsupported = [f"{f:g}" for f in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6) if f < floor]
    tail = "validated" if cal.tail_validated else "not validated"
    if as_json:
        emit_json({"out": str(out), "store": None if store is None else str(store),
                   "matcher_version": cal.matcher_version, "fit": cal.metadata,
                   "tail": {"threshold": cal.tail_threshold, "probability": cal.tail_probability,
                            "shape": cal.tail_shape, "scale": cal.tail_scale, "validated": cal.tail_validated},
                   "fmr_floor": floor, "threshold_for_fmr": points, "unsupported_fmr": unsupported})
    else:
        line = (f"{out}: calibration from {cal.metadata['n_scores']} non-mated scores "
                f"(tail above {cal.tail_threshold:.4g}, shape {cal.tail_shape:.3g}, scale {cal.tail_scale:.3g}, {tail}); "
                + ", ".join(f"FMR {k} at score {v:.4g}" for k, v in points.items()))
        typer.echo(line)
        typer.echo(f"  these scores support FMRs down to {floor:.2g}: lower estimates are reported as '<= {floor:.2g}'"
                   + (f"; no threshold for FMR {', '.join(unsupported)} (more non-mated scores needed)"
                      if unsupported else ""))


bench_app = typer.Typer(help="Benchmark suites: accuracy (1:1), identification (1:N), speed.")
app.add_typer(bench_app, name="bench")


@bench_app.command("accuracy")
def bench_accuracy(
    source: Path = typer.Argument(..., help="FVC-style dataset folder (or its parent with DB sub-folders), or a scores file."),
    protocol: str = typer.Option("all", help="Impostor protocol: fvc (first impressions, C(F,2)) | all (every cross-finger pair once)."),
    ppi: Optional[float] = typer.Option(None, help="Resolution of the images (default: known FVC value or 500)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.json, report.csv, scores.csv, det.png, histogram.png."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Earlier report.json to compare with."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """1:1 accuracy: EER (FVC), FMR100/1000/10000, ZeroFMR, FTE, comparison counts, timings."""
    from . import bench

    check_output_dir(out, "--out")
    scores, info = _scores_with_progress(source, protocol, ppi)
    report = bench.accuracy_report(scores, info, protocol=protocol if source.is_dir() else "scores file",
                                   dataset=str(source))
    if baseline is not None:
        report["baseline"] = {"report": str(baseline), "changes": bench.compare_reports(report, bench.load_report(baseline))}
    if out is not None:
        with OutputDir(out) as tmp_out:
            written = bench.write_accuracy_outputs(report, scores, tmp_out)
        report["outputs"] = {k: str(out / Path(v).name) for k, v in written.items()}
    if as_json:
        emit_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"Accuracy: {source} ({report['protocol']})")
    for col in ("scope", "mated", "non-mated", "EER [low, high]", "FMR100", "FMR1000", "FMR10000", "ZeroFMR"):
        tab.add_column(col, justify="right")
    for scope, m in [("all", report)] + list(report.get("databases", {}).items()):
        tab.add_row(scope, str(m["n_mated"]), str(m["n_nonmated"]),
                    f"{m['eer']:.4f} [{m['eer_low']:.4f}, {m['eer_high']:.4f}]",
                    _fmt_rate(m["fmr100"]), _fmt_rate(m["fmr1000"]), _fmt_rate(m["fmr10000"]), _fmt_rate(m["zero_fmr"]))
    console = Console()
    console.print(tab)
    if "eer_ci" in report:
        console.print(f"EER 95% CI (subject bootstrap): [{report['eer_ci'][0]:.4f}, {report['eer_ci'][1]:.4f}]")
    if "failure_to_enrol" in report:
        t = report["timings"]
        console.print(f"failure to enrol {report['failure_to_enrol']['count']}/{report['n_images']}; "
                      f"extraction median {_fmt_rate(t['extract_median_ms'])} ms/image, "
                      f"comparison median {_fmt_rate(t['compare_median_us'])} us/pair")
    if baseline is not None:
        btab = Table(title=f"Change against {baseline}")
        for col in ("metric", "baseline", "current", "change"):
            btab.add_column(col, justify="right")
        for r in report["baseline"]["changes"]:
            colour = "green" if r["better"] else ("red" if r["change"] else "white")
            btab.add_row(r["metric"], f"{r['baseline']:.4g}", f"{r['current']:.4g}", f"[{colour}]{r['change']:+.4g}[/]")
        console.print(btab)
    if out is not None:
        console.print(f"written: {', '.join(report['outputs'].values())}")


@bench_app.command("identification")
def bench_identification(
    source: Path = typer.Argument(..., help="FVC-style dataset folder (gallery: first impressions; probes: the others)."),
    ppi: Optional[float] = typer.Option(None, help="Resolution of the images."),
    max_rank: int = typer.Option(10, "--max-rank", help="Longest CMC rank."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for identification.json and cmc.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """1:N identification: CMC, FNIR at FPIR for the gallery size."""
    from . import bench

    check_output_dir(out, "--out")
    report = run_with_progress("extract", lambda: len(bench.list_dataset(source, ppi)),
                               lambda progress: bench.identification_report(source, ppi=ppi, max_rank=max_rank,
                                                                             progress=progress))
    if out is not None:
        from .plots import plot_cmc

        out.mkdir(parents=True, exist_ok=True)
        with OutputFiles(report=out / "identification.json", cmc=out / "cmc.png") as tmp:
            tmp["report"].write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
            plot_cmc(report["cmc"], tmp["cmc"], title=f"CMC, gallery of {report['gallery_size']}")
    if as_json:
        emit_json(report)
        return
    typer.echo(f"{source}: gallery {report['gallery_size']}, {report['n_mated_searches']} mated / "
               f"{report['n_nonmated_searches']} non-mated searches; CMC "
               + " ".join(f"r{k + 1}={v:.3f}" for k, v in enumerate(report["cmc"][:5])))
    for r in report["fnir_at_fpir"]:
        if r["measurable"]:
            typer.echo(f"  FPIR <= {r['target_fpir']:g}: threshold {r['threshold']:.4g}, FPIR {r['fpir']:.4g}, FNIR {r['fnir']:.4g}")
        else:
            typer.echo(f"  FPIR <= {r['target_fpir']:g}: needs >= {r['min_nonmated_searches']} non-mated searches")


@bench_app.command("speed")
def bench_speed(
    source: Path = typer.Argument(..., help="FVC-style dataset folder."),
    ppi: Optional[float] = typer.Option(None, help="Resolution of the images."),
    images: int = typer.Option(20, "--images", help="Images to extract and compare."),
    store: Optional[Path] = typer.Option(None, "--store", help="Also time searches against (a copy of) this gallery store."),
    gallery: Optional[str] = typer.Option(None, "--gallery", help="Gallery searched with --store (default: all)."),
    audit: bool = typer.Option(False, "--audit", help="Search --store itself, writing each timed search into its "
                               "audit log (default: search a temporary copy, the store's log untouched)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Median extraction time per image, comparison time per pair, search time (with --store)."""
    import tempfile

    from . import bench

    _existing_store_path(store)
    with tempfile.TemporaryDirectory(prefix="biomatch-bench-") as tmp:
        searched = store
        if store is not None and not audit:  # timed searches are audited: let them go into a copy's log
            searched = Path(tmp) / "store.db"
            with _existing_store(store, mode="read") as g:
                g.backup(searched)
        report = bench.speed_report(source, ppi=ppi, n_images=images, store=searched,
                                    galleries=None if gallery is None else [gallery])
    if report["search"]:
        report["search"].update(store=str(store), audited=audit)
    if as_json:
        emit_json(report)
        return
    typer.echo(f"{source}: extraction {report['extract_median_ms']:.1f} ms/image (median of {report['n_images']}), "
               f"comparison {report['compare_median_us']:.1f} us/pair ({report['comparisons_per_s']:.0f}/s)")
    if report["search"]:
        typer.echo(f"  search {report['search']['search_median_ms']:.1f} ms (median of {report['search']['searches']}) "
                   f"against {report['search']['store']}")


# ---------------------------------------------------------------------------
# enroll / search / delete / info / audit (biomatch.gallery)
# ---------------------------------------------------------------------------
_STORE_OPT = typer.Option(Path("biomatch.db"), "--store", help="Gallery store (SQLite file; must exist).")
_NEW_STORE_OPT = typer.Option(Path("biomatch.db"), "--store", help="Gallery store (SQLite file; created if absent).")
_PPI_OPT = typer.Option(None, "--ppi", help="Resolution of images that state none (default 500).")
_GALLERY_HELP = "Gallery name."
_OPERATOR_OPT = typer.Option(None, "--operator", help="Who does this (audit); default the login name.")
_FINGER_HELP = "POS=FILE: finger position (FGP 0-10) and an image or template file; repeatable."


def _parse_fingers(specs: list) -> dict:
    fingers = {}
    for spec in specs or []:
        pos, sep, path = spec.partition("=")
        if not sep or not pos.strip().isdigit():
            raise BiomatchError(f"--finger {spec!r}: expected POS=FILE with POS a finger position 0-10")
        p = int(pos)
        if p in fingers:
            raise BiomatchError(f"--finger {spec!r}: position {p} given twice")
        fingers[p] = Path(path)
    return fingers


def _load_fingers(specs: list, ppi: Optional[float]) -> tuple[dict, dict]:
    """Templates and original image bytes of --finger POS=FILE specs; a file is a template or an image
    by its content (:func:`_load_print`), whatever its name."""
    fingers, originals = {}, {}
    for pos, path in _parse_fingers(specs).items():
        template, extraction = _load_print(path, ppi)
        fingers[pos] = template
        if extraction is not None:
            try:
                originals[pos] = path.read_bytes()
            except OSError as exc:
                raise BiomatchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return fingers, originals


#: ANSI/NIST-ITL record types the engine does not read, as a person would name them.
_UNSUPPORTED_RECORDS = {
    2: "user-defined descriptive text", 7: "user-defined image", 8: "signature image",
    10: "face, other body part or scar/mark/tattoo image", 11: "voice", 12: "forensic dental",
    13: "latent print", 15: "palm print", 16: "user-defined test image", 17: "iris image",
    18: "DNA", 19: "plantar (foot) print", 20: "source representation", 21: "associated context",
    22: "non-photographic imagery", 98: "information assurance", 99: "CBEFF biometric data",
}


def _unsupported_records(tx) -> list:
    """'Type-13 latent print record' for each record type of ``tx`` that the engine does not read."""
    types = sorted({t for t, _ in tx.records if t in _UNSUPPORTED_RECORDS})
    return [f"Type-{t} {_UNSUPPORTED_RECORDS[t]} record" for t in types]


def _ebts_fingers(path: Path):
    """Fingers, transaction id and audit context from an ANSI/NIST-ITL transaction."""
    from .formats import read_transaction

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BiomatchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    tx = read_transaction(data, name=str(path))  # errors name the file, not 'transaction bytes'
    fingers = dict(tx.templates)
    # fingers sent as images only (no Type-9 for their position) are extracted here
    images = [img for img in tx.images if img.pixels is not None and img.position not in fingers and 0 <= img.position <= 10]
    if images:
        from .extraction import extract

        for img in images:
            fingers.setdefault(img.position, extract(img.pixels, ppi=img.ppi, position=img.position))
    unsupported = _unsupported_records(tx)
    if not fingers:
        if unsupported:
            raise BiomatchError(f"{path}: not supported: {', '.join(unsupported)} (this engine reads single-finger "
                                "images, Type-4/14, and minutiae, Type-9)")
        raise BiomatchError(f"{path}: the transaction holds no finger images or templates")
    if unsupported:
        import warnings

        warnings.warn(f"{path}: not supported, ignored: {', '.join(unsupported)}", stacklevel=2)
    return fingers, tx.tcn or None, {"ori": tx.ori, "tcn": tx.tcn, "tot": tx.tot, "source": path.name}, data


def _folder_subjects(folder: Path) -> list:
    """SUBJECT_POS.ext files (POS an FGP code 0-10; other names: position 0), grouped by subject."""
    from .gallery.checks import TEMPLATE_SUFFIXES as _TEMPLATE_SUFFIXES

    image_suffixes = {".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".wsq", ".pgm"}
    groups: dict = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.suffix.lower() not in image_suffixes | _TEMPLATE_SUFFIXES:
            continue
        subject, sep, pos = f.stem.rpartition("_")
        if not sep or not pos.isdigit() or int(pos) > 10:
            subject, pos = f.stem, "0"
        fingers = groups.setdefault(subject, {})
        if int(pos) in fingers:
            raise BiomatchError(f"{f}: subject {subject!r} already has a file for position {pos}")
        fingers[int(pos)] = f
    if not groups:
        raise BiomatchError(f"{folder}: no image or template files (SUBJECT_POS.ext) found")
    return sorted(groups.items())


@app.command()
def enroll(
    subject: Optional[str] = typer.Argument(None, help="Subject id (omit with --folder)."),
    finger: list[str] = typer.Option(None, "--finger", "-f", help=_FINGER_HELP),
    folder: Optional[Path] = typer.Option(None, "--folder", help="Bulk: enrol every SUBJECT_POS.ext file of a folder."),
    ebts: Optional[Path] = typer.Option(None, "--ebts", help="ANSI/NIST-ITL booking transaction to enrol."),
    store: Path = _NEW_STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=_GALLERY_HELP),
    ppi: Optional[float] = _PPI_OPT,
    operator: Optional[str] = _OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    override: bool = typer.Option(False, "--override", help="--ebts: enrol even if the sequence check or quality gate refuses."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Enrol a subject's fingers (images or templates), an EBTS transaction, or a folder in bulk.

    An --ebts booking is checked first (rolled boxes against its slaps, quality gate; see
    check-transaction) and refused with the reasons unless --override."""
    from .gallery import Gallery

    if folder is None:  # read and extract every print before the store is touched
        if not subject:
            raise BiomatchError("enroll: give a SUBJECT id (or --folder)")
        if finger and ebts is not None:
            raise BiomatchError("enroll: give the fingers either with --finger or with --ebts, not both")
        fingers, originals = _load_fingers(finger, ppi)
        context = None
        if ebts is not None:
            fingers, tcn, context, raw = _ebts_fingers(ebts)
            transaction_id = transaction_id or tcn
            originals = {None: raw}
        if not fingers:
            raise BiomatchError("enroll: give fingers with --finger POS=FILE, --ebts FILE or --folder DIR")
    with removed_on_failure(store), Gallery.open(store) as g:
        if folder is not None:
            if subject or finger or ebts:
                raise BiomatchError("--folder: give either a folder or SUBJECT with --finger/--ebts, not both")
            items = _folder_subjects(folder)
            subjects = items
            if ppi is not None:  # extracted here at that resolution, one subject at a time (originals not kept)
                subjects = ((s, {p: _load_print(f, ppi)[0] for p, f in fs.items()}) for s, fs in items)
            n = run_with_progress("enrol", len(items), lambda progress: g.enroll_many(
                subjects, gallery=gallery, operator=operator, transaction_id=transaction_id, progress=progress))
            result = {"store": str(store), "gallery": gallery, "enrolled": n,
                      "fingers": sum(len(f) for _, f in items)}
        else:
            if ebts is not None:
                seq = g.enroll_transaction(subject, originals[None], gallery=gallery, operator=operator,
                                           transaction_id=transaction_id, override=override, context=context)
                fingers = g.get(subject, gallery=gallery).fingers
            else:
                seq = g.enroll(subject, fingers, gallery=gallery, operator=operator, transaction_id=transaction_id,
                               originals=originals or None, context=context)
            result = {"store": str(store), "gallery": gallery, "subject": subject,
                      "positions": sorted(fingers), "audit_seq": seq}
    if as_json:
        emit_json(result)
    elif "enrolled" in result:
        typer.echo(f"{store}: enrolled {result['enrolled']} subjects ({result['fingers']} fingers) into {gallery!r}")
    else:
        typer.echo(f"{store}: enrolled {subject!r} into {gallery!r}, positions {result['positions']}")


@app.command()
def search(
    finger: list[str] = typer.Option(None, "--finger", "-f", help=_FINGER_HELP),
    ebts: Optional[Path] = typer.Option(None, "--ebts", help="ANSI/NIST-ITL transaction whose fingers are the probe."),
    store: Path = _STORE_OPT,
    gallery: list[str] = typer.Option(None, "--gallery", help="Gallery to search; repeatable (default: all)."),
    max_candidates: int = typer.Option(10, "--max-candidates", "-L", help="Candidate list length."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Raw single-finger score; only hits are listed."),
    ppi: Optional[float] = _PPI_OPT,
    operator: Optional[str] = _OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the candidate list as JSON."),
):
    """Search probe fingers against galleries; prints the ranked candidate list."""
    from .calibration import format_fmr

    _existing_store_path(store)
    if finger and ebts is not None:
        raise BiomatchError("search: give the probe either with --finger or with --ebts, not both")
    fingers, _ = _load_fingers(finger, ppi)
    context = None
    if ebts is not None:
        fingers, tcn, context, _ = _ebts_fingers(ebts)
        transaction_id = transaction_id or tcn
    if not fingers:
        raise BiomatchError("search: give probe fingers with --finger POS=FILE or --ebts FILE")
    with _existing_store(store, mode=_search_mode(store)) as g:
        cands = g.search(fingers, galleries=gallery or None, max_candidates=max_candidates, threshold=threshold,
                         operator=operator, transaction_id=transaction_id, context=context)
        seq = None if g.read_only else g.audit_records()[-1]["seq"]  # a read-only store holds no record of it
    if as_json:
        emit_json({"store": str(store), "audit_seq": seq, "audited": seq is not None,
                   "candidates": [c.to_dict() for c in cands]})
        return
    if not cands:
        typer.echo("no candidates" + (" at or above the threshold" if threshold is not None else ""))
    for c in cands:
        fmr = format_fmr(c.fmr, c.fmr_is_bound)
        typer.echo(f"{c.rank:3d}  {c.gallery}/{c.subject}  score {c.score:.4f}  FMR {fmr}  "
                   f"fingers {','.join(str(f.position) for f in c.fingers)}")


@app.command()
def delete(
    subject: str = typer.Argument(..., help="Subject id."),
    store: Path = _STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=_GALLERY_HELP),
    operator: Optional[str] = _OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Delete a subject for good (templates, originals, index entries); the audit keeps that it happened."""
    with _existing_store(store) as g:
        seq = g.delete(subject, gallery=gallery, operator=operator, transaction_id=transaction_id)
    if as_json:
        emit_json({"store": str(store), "gallery": gallery, "deleted": subject, "audit_seq": seq})
    else:
        typer.echo(f"{store}: deleted {subject!r} from {gallery!r}")


@app.command()
def update(
    subject: str = typer.Argument(..., help="Subject id (already enrolled)."),
    finger: list[str] = typer.Option(None, "--finger", "-f", help=_FINGER_HELP + " Replaces or adds that finger."),
    remove: list[int] = typer.Option(None, "--remove", help="Finger position to remove; repeatable."),
    metadata: Optional[str] = typer.Option(None, "--metadata", help="JSON object replacing the subject's metadata."),
    store: Path = _STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=_GALLERY_HELP),
    ppi: Optional[float] = _PPI_OPT,
    operator: Optional[str] = _OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Replace or add fingers of an enrolled subject, remove fingers, or replace its metadata (audited)."""
    _existing_store_path(store)
    meta = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except ValueError as exc:
            raise BiomatchError(f"--metadata: not valid JSON ({exc})") from None
    fingers, _ = _load_fingers(finger, ppi)
    with _existing_store(store) as g:
        seq = g.update(subject, fingers or None, gallery=gallery, operator=operator, metadata=meta,
                       remove_positions=remove or (), transaction_id=transaction_id)
    result = {"store": str(store), "gallery": gallery, "subject": subject, "replaced": sorted(fingers),
              "removed": sorted(remove or ()), "metadata": meta is not None, "audit_seq": seq}
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"{store}: updated {subject!r} in {gallery!r}: fingers {result['replaced']} replaced or added, "
                   f"{result['removed']} removed" + (", metadata replaced" if meta is not None else ""))


@app.command("import")
def import_store(
    source: Path = typer.Argument(..., help="The store to copy from (not changed)."),
    store: Path = _NEW_STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help="Gallery to import into (created if absent)."),
    source_gallery: Optional[str] = typer.Option(None, "--source-gallery", help="Gallery of the source (default: --gallery)."),
    skip_existing: bool = typer.Option(False, "--skip-existing",
                                       help="Leave subjects already enrolled here as they are (resume an import)."),
    operator: Optional[str] = _OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Copy a gallery of another store into this one: templates, metadata, originals, index codes and
    rescoring rows (nothing re-extracted); one audit record per subject."""
    from .gallery import Gallery

    if not source.is_file():
        raise BiomatchError(f"{source}: no such store")
    with removed_on_failure(store), Gallery.open(store) as g:
        n = g.import_from(source, gallery=gallery, source_gallery=source_gallery,
                          on_existing="skip" if skip_existing else "raise", operator=operator,
                          transaction_id=transaction_id)
    if as_json:
        emit_json({"store": str(store), "gallery": gallery, "source": str(source),
                   "source_gallery": source_gallery or gallery, "imported": n})
    else:
        typer.echo(f"{store}: imported {n} subjects into {gallery!r} from {source}")


@app.command()
def info(
    store: Path = _STORE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the store's statistics as JSON."),
):
    """Galleries, subjects, fingers, index state and audit length of a store."""
    with _existing_store(store, mode="read") as g:
        st = g.stats()
    if as_json:
        emit_json(st)
        return
    typer.echo(f"{store}: {st['store_bytes']} bytes, {st['audit_records']} audit records")
    for name, s in st["galleries"].items():
        typer.echo(f"  {name}: {s['subjects']} subjects, {s['fingers']} fingers, generation {s['generation']}, "
                   f"index file generation {s['index_file_generation']}")


def _existing_store_path(store: Optional[Path]) -> None:
    """Fail at once (before any work) when ``store`` is given and is not an existing store file."""
    if store is not None and not store.is_file():
        raise BiomatchError(f"{store}: no such store" + (" (a folder)" if store.is_dir() else "")
                            + "; `biomatch enroll` or `biomatch import` creates one")


def _store_for_writing(store: Path, create: bool):
    """An open Gallery on ``store``; created only when ``create`` (``--create``) says so."""
    if create:
        from .gallery import Gallery

        return Gallery.open(store)
    return _existing_store(store)


def _existing_store(store: Path, mode: str = "write"):
    """An open Gallery on a store that must already exist (key from BIOMATCH_STORE_KEY); ``mode="read"``
    for verbs that only read: nothing is written, so they work on read-only stores and media."""
    from .gallery import Gallery

    _existing_store_path(store)
    return Gallery.open(store, mode=mode)


def _search_mode(store: Path) -> str:
    """A search is audited in its store; only a store that cannot be written is searched read-only."""
    writable = os.access(store, os.W_OK) and os.access(store.parent if str(store.parent) else Path("."), os.W_OK)
    return "write" if writable else "read"


@app.command()
def check(
    store: Path = _STORE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Verify store/index consistency, derived files and the audit chain; exit 1 when a problem is found."""
    with _existing_store(store, mode="read") as g:
        rep = g.check()
    if as_json:
        emit_json(rep)
    else:
        for name, s in rep["galleries"].items():
            typer.echo(f"  {name}: {s['subjects']} subjects, {s['fingers']} fingers, generation {s['generation']}, "
                       f"indexed {s.get('indexed_fingers')}")
        for w in rep["warnings"]:
            typer.echo(f"warning: {w}", err=True)
        for p in rep["problems"]:
            typer.echo(f"problem: {p}", err=True)
        state = "consistent" if rep["ok"] else f"{len(rep['problems'])} problems"
        typer.echo(f"{store}: {state}, {rep['audit_records']} audit records verified")
    if not rep["ok"]:
        if as_json:  # the report (ok: false, problems) is the one JSON document; exit 1 says it failed
            raise typer.Exit(1)
        raise BiomatchError(f"{store}: check found {len(rep['problems'])} problems")


@app.command("check-transaction")
def check_transaction(
    transaction: Path = typer.Argument(..., help="ANSI/NIST-ITL ten-print transaction (rolled boxes and slaps)."),
    as_json: bool = typer.Option(False, "--json", help="Print the check as JSON."),
):
    """Sequence check (each rolled print against the slap fingers) and quality gate of a ten-print transaction.

    Exit 1 when a rolled print is in the wrong box or a print must be re-taken; 0 otherwise (also when
    the transaction has no slaps: "not_checked", or a box could not be confirmed: "incomplete")."""
    from .sequence import sequence_check

    rep = sequence_check(transaction)
    if as_json:
        emit_json({"transaction": str(transaction), **rep.to_dict()})
    else:
        for b in rep.boxes:
            other = f" (holds finger {b.swapped_with})" if b.swapped_with else ""
            typer.echo(f"  box {b.position:2d}: {b.verdict}{other}")
        for q in rep.quality:
            if q.decision != "accept":
                typer.echo(f"  {q.source} {q.position}: re-take ({q.reason})")
        for r in rep.reasons:
            typer.echo(f"note: {r}", err=True)
        typer.echo(f"{transaction}: sequence {rep.verdict}, quality {'accept' if rep.quality_ok else 're-take'}")
    if rep.verdict == "fail" or not rep.quality_ok:
        if as_json:  # the report is the one JSON document; exit 1 says the transaction is refused
            raise typer.Exit(1)
        raise BiomatchError(f"{transaction}: " + ("; ".join(r for r in rep.reasons if "holds finger" in r)
                                                  or "prints to re-take"))


@app.command()
def backup(
    dest: Path = typer.Argument(..., help="New file for the copy (must not exist)."),
    store: Path = _STORE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Online backup of a store (SQLite backup API) while it stays in use; the copy is verified."""
    with _existing_store(store, mode="read") as g:
        res = g.backup(dest)
    if as_json:
        emit_json(res)
    else:
        typer.echo(f"{store} -> {dest}: {res['bytes']} bytes, {res['audit_records']} audit records verified")


@app.command()
def restore(
    source: Path = typer.Argument(..., help="A backup made by `biomatch backup`."),
    store: Path = typer.Option(Path("biomatch.db"), "--store", help="Store to restore to (created)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing store (close every handle on it first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Restore a backup to --store (derived index and feature files are rebuilt)."""
    from .gallery import Gallery

    res = Gallery.restore(source, store, overwrite=force)
    if as_json:
        emit_json(res)
    else:
        typer.echo(f"{source} -> {store}: restored, {res['audit_records']} audit records verified")


audit_app = typer.Typer(help="The hash-chained audit log: list, verify, head, export.")
app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(
    store: Path = _STORE_OPT,
    since: int = typer.Option(1, "--since", help="First sequence number."),
    limit: int = typer.Option(50, "--limit", help="Records to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
):
    """List audit records (not verified; see `audit verify`)."""
    with _existing_store(store, mode="read") as g:
        recs = g.audit_records(since=since, limit=limit)
    if as_json:
        emit_json(recs)
        return
    for r in recs:
        who = r.get("subject") or ",".join(r.get("galleries", []) or [])
        typer.echo(f"{r['seq']:6d}  {r['time']}  {r['action']:<11} {r['operator']:<12} {who}  {r.get('decision', '')}")


@audit_app.command("verify")
def audit_verify(
    store: Path = _STORE_OPT,
    head_: Optional[str] = typer.Option(None, "--head", help="Also prove the log extends these exported heads: "
                                        "a head file (one per line) or a head value (from `audit head`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Re-check the whole chain; exit 1 naming the first edited, removed or reordered record
    (with --head: or the first exported head the log no longer extends, e.g. records cut from the end)."""
    with _existing_store(store, mode="read") as g:
        n = g.verify_audit()
        proof = g.verify_audit_heads(head_) if head_ is not None else None
        head = g.audit_records(since=n, limit=1)
    digest = head[0]["hash"] if head else None
    if as_json:
        emit_json({"store": str(store), "verified": n, "head": digest, **({"heads": proof} if proof else {})})
    else:
        extra = (f"; extends {proof['heads']} exported heads ({proof['signed']} HMAC-checked)" if proof else "")
        typer.echo(f"{store}: audit chain intact, {n} records, head {digest}{extra}")


@audit_app.command("head")
def audit_head(
    store: Path = _STORE_OPT,
    append: Optional[Path] = typer.Option(None, "--append", help="Also append the head to this file (append-only, 0600)."),
    as_json: bool = typer.Option(False, "--json", help="Print the head as JSON."),
):
    """Print the verified head of the audit log (count, hash, time; HMAC when the store is encrypted):
    keep it on other media, check it later with `audit verify --head`."""
    from . import audit as _audit

    with _existing_store(store, mode="read") as g:
        h = g.audit_head()
    if append is not None:
        _audit.export_head(append, h)
    if as_json:
        emit_json({"store": str(store), "count": h.count, "hash": h.hash, "time": h.time, "key_id": h.key_id,
                   "hmac": h.hmac, "text": h.text()})
    else:
        typer.echo(h.text())


@audit_app.command("export")
def audit_export(
    store: Path = _STORE_OPT,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON-lines file (default stdout)."),
):
    """Export the audit log as JSON lines (each record with its hash)."""
    with OutputFiles(out=out) as tmp, _existing_store(store, mode="read") as g:
        n = g.export_audit(tmp["out"] if out is not None else sys.stdout)
    if out is not None:
        typer.echo(f"{out}: {n} audit records", err=True)


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------
@app.command()
def demo(
    data: Path = typer.Option(Path("data/synthetic"), "--data", help="FVC-style FINGER_IMPRESSION images."),
    store: Path = _NEW_STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=_GALLERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome of every search as JSON."),
):
    """The main job on the embedded defaults: enrol the synthetic sample, search every probe against it."""
    from . import bench
    from .demo import run_demo

    with removed_on_failure(store):
        result = run_with_progress("demo", lambda: 2 * len(bench.list_dataset(data)) if data.is_dir() else 0,
                                   lambda progress: run_demo(data, store, gallery=gallery, progress=progress))
    if as_json:
        emit_json(result)
        return
    typer.echo(f"{store}: gallery {gallery!r}: {result['enrolled']} subjects enrolled"
               f" ({result['reused']} already there) from {data}")
    from .calibration import format_fmr

    for p in result["probes"]:
        rank = "not in list" if p["mate_rank"] is None else f"rank {p['mate_rank']}"
        fmr = format_fmr(p["mate_fmr"], p.get("mate_fmr_is_bound", False), digits=1)
        typer.echo(f"  {p['probe']:>16}  mate {p['mate']}: {rank}, FMR {fmr}; top {p['top_subject']}")
    n = len(result["probes"])
    med = format_fmr(result["median_mate_fmr"], result.get("median_mate_fmr_is_bound", False), digits=1)
    typer.echo(f"{n} searches: rank-1 {100 * result['rank1']:.1f} %, median mate FMR "
               f"{med}; failure to enrol {len(result['failure_to_enrol'])}; "
               f"every search is in the audit log (biomatch audit list --store {store})")


def main(argv=None) -> int:
    """Entry point: run the app under :mod:`biomatch.cli_conventions` (exit 0/1/2/130, one error line)."""
    return run_app(app, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
