"""Verbs on the subjects of a gallery store (:mod:`biomatch.gallery`): ``enroll``, ``search``,
``delete``, ``update``, ``import``, ``info``, and ``demo``, the enrol-then-search job on the sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .cli_conventions import removed_on_failure
from .cli_inputs import FINGER_HELP, PPI_OPT, ebts_fingers, folder_subjects, load_fingers, load_print
from .cli_output import emit_json, run_with_progress
from .cli_stores import (GALLERY_HELP, NEW_STORE_OPT, OPERATOR_OPT, STORE_OPT, existing_store, existing_store_path,
                     search_mode)
from .errors import BiomatchError


def enroll(
    subject: Optional[str] = typer.Argument(None, help="Subject id (omit with --folder)."),
    finger: list[str] = typer.Option(None, "--finger", "-f", help=FINGER_HELP),
    folder: Optional[Path] = typer.Option(None, "--folder", help="Bulk: enrol every SUBJECT_POS.ext file of a folder."),
    ebts: Optional[Path] = typer.Option(None, "--ebts", help="ANSI/NIST-ITL booking transaction to enrol."),
    store: Path = NEW_STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=GALLERY_HELP),
    ppi: Optional[float] = PPI_OPT,
    operator: Optional[str] = OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    override: bool = typer.Option(False, "--override", help="--ebts: enrol even if the sequence check or quality gate refuses."),
    keep_slap_impressions: bool = typer.Option(
        False, "--keep-slap-impressions",
        help="--ebts: also keep each accepted slap segment as an extra impression of its finger."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Enrol a subject's fingers (images or templates), an EBTS transaction, or a folder in bulk.

    An --ebts booking is checked first (rolled boxes against its slaps, quality gate; see
    check-transaction) and refused with the reasons unless --override."""
    from .gallery import Gallery

    if keep_slap_impressions and ebts is None:
        raise BiomatchError("--keep-slap-impressions: only with --ebts (the slaps come from the transaction)")
    if folder is None:  # read and extract every print before the store is touched
        if not subject:
            raise BiomatchError("enroll: give a SUBJECT id (or --folder)")
        if finger and ebts is not None:
            raise BiomatchError("enroll: give the fingers either with --finger or with --ebts, not both")
        fingers, originals = load_fingers(finger, ppi)
        context = None
        if ebts is not None:
            fingers, tcn, context, raw = ebts_fingers(ebts)
            transaction_id = transaction_id or tcn
            originals = {None: raw}
        if not fingers:
            raise BiomatchError("enroll: give fingers with --finger POS=FILE, --ebts FILE or --folder DIR")
    with removed_on_failure(store), Gallery.open(store) as g:
        if folder is not None:
            if subject or finger or ebts:
                raise BiomatchError("--folder: give either a folder or SUBJECT with --finger/--ebts, not both")
            items = folder_subjects(folder)
            subjects = items
            if ppi is not None:  # extracted here at that resolution, one subject at a time (originals not kept)
                subjects = ((s, {p: load_print(f, ppi)[0] for p, f in fs.items()}) for s, fs in items)
            n = run_with_progress("enrol", len(items), lambda progress: g.enroll_many(
                subjects, gallery=gallery, operator=operator, transaction_id=transaction_id, progress=progress))
            result = {"store": str(store), "gallery": gallery, "enrolled": n,
                      "fingers": sum(len(f) for _, f in items)}
        else:
            if ebts is not None:
                seq = g.enroll_transaction(subject, originals[None], gallery=gallery, operator=operator,
                                           transaction_id=transaction_id, override=override, context=context,
                                           keep_slap_impressions=keep_slap_impressions)
                record = g.get(subject, gallery=gallery)
                fingers = record.fingers
                impressions = {str(p): [src for _, src, _ in v] for p, v in sorted(record.impressions.items())}
            else:
                seq = g.enroll(subject, fingers, gallery=gallery, operator=operator, transaction_id=transaction_id,
                               originals=originals or None, context=context)
            result = {"store": str(store), "gallery": gallery, "subject": subject,
                      "positions": sorted(fingers), "audit_seq": seq}
            if ebts is not None and keep_slap_impressions:
                result["extra_impressions"] = impressions
    if as_json:
        emit_json(result)
    elif "enrolled" in result:
        typer.echo(f"{store}: enrolled {result['enrolled']} subjects ({result['fingers']} fingers) into {gallery!r}")
    else:
        typer.echo(f"{store}: enrolled {subject!r} into {gallery!r}, positions {result['positions']}")
def search(
    finger: list[str] = typer.Option(None, "--finger", "-f", help=FINGER_HELP),
    ebts: Optional[Path] = typer.Option(None, "--ebts", help="ANSI/NIST-ITL transaction whose fingers are the probe."),
    store: Path = STORE_OPT,
    gallery: list[str] = typer.Option(None, "--gallery", help="Gallery to search; repeatable (default: all)."),
    max_candidates: int = typer.Option(10, "--max-candidates", "-L", help="Candidate list length."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Raw single-finger score; only hits are listed."),
    ppi: Optional[float] = PPI_OPT,
    operator: Optional[str] = OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the candidate list as JSON."),
):
    """Search probe fingers against galleries; prints the ranked candidate list."""
    from .calibration import format_fmr

    existing_store_path(store)
    if finger and ebts is not None:
        raise BiomatchError("search: give the probe either with --finger or with --ebts, not both")
    fingers, _ = load_fingers(finger, ppi)
    context = None
    if ebts is not None:
        fingers, tcn, context, _ = ebts_fingers(ebts)
        transaction_id = transaction_id or tcn
    if not fingers:
        raise BiomatchError("search: give probe fingers with --finger POS=FILE or --ebts FILE")
    with existing_store(store, mode=search_mode(store)) as g:
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
def delete(
    subject: str = typer.Argument(..., help="Subject id."),
    store: Path = STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=GALLERY_HELP),
    operator: Optional[str] = OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Delete a subject for good (templates, originals, index entries); the audit keeps that it happened."""
    with existing_store(store) as g:
        seq = g.delete(subject, gallery=gallery, operator=operator, transaction_id=transaction_id)
    if as_json:
        emit_json({"store": str(store), "gallery": gallery, "deleted": subject, "audit_seq": seq})
    else:
        typer.echo(f"{store}: deleted {subject!r} from {gallery!r}")
def update(
    subject: str = typer.Argument(..., help="Subject id (already enrolled)."),
    finger: list[str] = typer.Option(None, "--finger", "-f", help=FINGER_HELP + " Replaces or adds that finger."),
    remove: list[int] = typer.Option(None, "--remove", help="Finger position to remove; repeatable."),
    remove_impression: Optional[str] = typer.Option(
        None, "--remove-impression", metavar="POS.N",
        help="Remove extra impression N (1-9) of finger POS, e.g. 2.1; given on its own."),
    metadata: Optional[str] = typer.Option(None, "--metadata", help="JSON object replacing the subject's metadata."),
    store: Path = STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=GALLERY_HELP),
    ppi: Optional[float] = PPI_OPT,
    operator: Optional[str] = OPERATOR_OPT,
    transaction_id: Optional[str] = typer.Option(None, "--transaction-id", help="Caller's transaction id (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Replace or add fingers of an enrolled subject, remove fingers or one extra impression, or replace its
    metadata (audited)."""
    existing_store_path(store)
    if remove_impression is not None:
        if finger or remove or metadata is not None:
            raise BiomatchError("--remove-impression: give it on its own (not with --finger, --remove or --metadata)")
        pos, dot, num = remove_impression.partition(".")
        if not (dot and pos.isdigit() and num.isdigit()):
            raise BiomatchError(f"--remove-impression: expected POS.N (e.g. 2.1), got {remove_impression!r}")
        with existing_store(store) as g:
            seq = g.remove_impression(subject, int(pos), int(num), gallery=gallery, operator=operator,
                                      transaction_id=transaction_id)
        if as_json:
            emit_json({"store": str(store), "gallery": gallery, "subject": subject,
                       "removed_impression": {"position": int(pos), "impression": int(num)}, "audit_seq": seq})
        else:
            typer.echo(f"{store}: updated {subject!r} in {gallery!r}: impression {int(num)} of finger {int(pos)} removed")
        return
    meta = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except ValueError as exc:
            raise BiomatchError(f"--metadata: not valid JSON ({exc})") from None
    fingers, _ = load_fingers(finger, ppi)
    with existing_store(store) as g:
        seq = g.update(subject, fingers or None, gallery=gallery, operator=operator, metadata=meta,
                       remove_positions=remove or (), transaction_id=transaction_id)
    result = {"store": str(store), "gallery": gallery, "subject": subject, "replaced": sorted(fingers),
              "removed": sorted(remove or ()), "metadata": meta is not None, "audit_seq": seq}
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"{store}: updated {subject!r} in {gallery!r}: fingers {result['replaced']} replaced or added, "
                   f"{result['removed']} removed" + (", metadata replaced" if meta is not None else ""))
def import_store(
    source: Path = typer.Argument(..., help="The store to copy from (not changed)."),
    store: Path = NEW_STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help="Gallery to import into (created if absent)."),
    source_gallery: Optional[str] = typer.Option(None, "--source-gallery", help="Gallery of the source (default: --gallery)."),
    skip_existing: bool = typer.Option(False, "--skip-existing",
                                       help="Leave subjects already enrolled here as they are (resume an import)."),
    operator: Optional[str] = OPERATOR_OPT,
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
def info(
    store: Path = STORE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the store's statistics as JSON."),
):
    """Galleries, subjects, fingers, index state and audit length of a store."""
    with existing_store(store, mode="read") as g:
        st = g.stats()
    if as_json:
        emit_json(st)
        return
    typer.echo(f"{store}: {st['store_bytes']} bytes, {st['audit_records']} audit records")
    for name, s in st["galleries"].items():
        typer.echo(f"  {name}: {s['subjects']} subjects, {s['fingers']} fingers ({s['extra_impressions']} of them extra "
                   f"impressions), generation {s['generation']}, "
                   f"index file generation {s['index_file_generation']}")
def demo(
    data: Path = typer.Option(Path("data/synthetic"), "--data", help="FVC-style FINGER_IMPRESSION images."),
    store: Path = NEW_STORE_OPT,
    gallery: str = typer.Option("default", "--gallery", help=GALLERY_HELP),
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
