"""Verbs that measure and set operating points: ``tune`` (threshold table, chosen threshold),
``calibrate`` (score -> FMR fit) and the ``bench`` group (accuracy, identification, speed),
over :mod:`biomatch.bench`, :mod:`biomatch.evaluation` and :mod:`biomatch.calibration`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .cli_conventions import OutputDir, OutputFiles, check_output_dir, check_output_file
from .cli_output import emit_json, fail, fmt_rate, json_default, run_with_progress
from .cli_stores import existing_store, existing_store_path, store_for_writing


def _scores_with_progress(source: Path, protocol: str, ppi: Optional[float]):
    from . import bench

    if not source.is_dir():  # a scores file: nothing to extract
        return bench.load_scores_source(source, protocol=protocol, ppi=ppi)
    return run_with_progress("extract", lambda: len(bench.list_dataset(source, ppi)),
                             lambda progress: bench.load_scores_source(source, protocol=protocol, ppi=ppi,
                                                                       progress=progress))
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
        existing_store_path(store)
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
                        f"{fmt_rate(r['fmr'])} ({r['false_matches']}/{r['n_nonmated']})",
                        f"[{fmt_rate(r['fmr_ci'][0])}, {fmt_rate(r['fmr_ci'][1])}]",
                        f"{fmt_rate(r['fnmr'])}", f"[{fmt_rate(r['fnmr_ci'][0])}, {fmt_rate(r['fnmr_ci'][1])}]")
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
    with store_for_writing(store, create) as g:
        seq = g.set_threshold(threshold, gallery=gallery, operator=operator)
    return f"{store} (gallery {gallery}, audit record {seq})"
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
            existing_store_path(store)
        scores, _ = _scores_with_progress(source, protocol, ppi)
        if matcher_version is None:
            from .scoring import MATCHER_VERSION as matcher_version
        cal = Calibration.fit(scores.score[~scores.mated], source=source_name or str(source),
                              matcher_version=matcher_version)
        cal.save(tmp["out"])
    if store is not None:
        with store_for_writing(store, create) as g:
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
                    fmt_rate(m["fmr100"]), fmt_rate(m["fmr1000"]), fmt_rate(m["fmr10000"]), fmt_rate(m["zero_fmr"]))
    console = Console()
    console.print(tab)
    if "eer_ci" in report:
        console.print(f"EER 95% CI (subject bootstrap): [{report['eer_ci'][0]:.4f}, {report['eer_ci'][1]:.4f}]")
    if "failure_to_enrol" in report:
        t = report["timings"]
        console.print(f"failure to enrol {report['failure_to_enrol']['count']}/{report['n_images']}; "
                      f"extraction median {fmt_rate(t['extract_median_ms'])} ms/image, "
                      f"comparison median {fmt_rate(t['compare_median_us'])} us/pair")
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
            tmp["report"].write_text(json.dumps(report, indent=2, default=json_default) + "\n")
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

    existing_store_path(store)
    with tempfile.TemporaryDirectory(prefix="biomatch-bench-") as tmp:
        searched = store
        if store is not None and not audit:  # timed searches are audited: let them go into a copy's log
            searched = Path(tmp) / "store.db"
            with existing_store(store, mode="read") as g:
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
