"""Verbs that keep a store sound: ``check`` (consistency and audit chain), ``check-transaction``
(sequence check and quality gate of a ten-print), ``backup``, ``restore`` and the ``audit`` group
(list, verify, head, export of the hash-chained log)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_conventions import OutputFiles
from .cli_output import emit_json
from .cli_stores import STORE_OPT, existing_store
from .errors import BiomatchError


def check(
    store: Path = STORE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Verify store/index consistency, derived files and the audit chain; exit 1 when a problem is found."""
    with existing_store(store, mode="read") as g:
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
def backup(
    dest: Path = typer.Argument(..., help="New file for the copy (must not exist)."),
    store: Path = STORE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Online backup of a store (SQLite backup API) while it stays in use; the copy is verified."""
    with existing_store(store, mode="read") as g:
        res = g.backup(dest)
    if as_json:
        emit_json(res)
    else:
        typer.echo(f"{store} -> {dest}: {res['bytes']} bytes, {res['audit_records']} audit records verified")
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


@audit_app.command("list")
def audit_list(
    store: Path = STORE_OPT,
    since: int = typer.Option(1, "--since", help="First sequence number."),
    limit: int = typer.Option(50, "--limit", help="Records to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
):
    """List audit records (not verified; see `audit verify`)."""
    with existing_store(store, mode="read") as g:
        recs = g.audit_records(since=since, limit=limit)
    if as_json:
        emit_json(recs)
        return
    for r in recs:
        who = r.get("subject") or ",".join(r.get("galleries", []) or [])
        typer.echo(f"{r['seq']:6d}  {r['time']}  {r['action']:<11} {r['operator']:<12} {who}  {r.get('decision', '')}")


@audit_app.command("verify")
def audit_verify(
    store: Path = STORE_OPT,
    head_: Optional[str] = typer.Option(None, "--head", help="Also prove the log extends these exported heads: "
                                        "a head file (one per line) or a head value (from `audit head`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Re-check the whole chain; exit 1 naming the first edited, removed or reordered record
    (with --head: or the first exported head the log no longer extends, e.g. records cut from the end)."""
    with existing_store(store, mode="read") as g:
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
    store: Path = STORE_OPT,
    append: Optional[Path] = typer.Option(None, "--append", help="Also append the head to this file (append-only, 0600)."),
    as_json: bool = typer.Option(False, "--json", help="Print the head as JSON."),
):
    """Print the verified head of the audit log (count, hash, time; HMAC when the store is encrypted):
    keep it on other media, check it later with `audit verify --head`."""
    from . import audit as _audit

    with existing_store(store, mode="read") as g:
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
    store: Path = STORE_OPT,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON-lines file (default stdout)."),
):
    """Export the audit log as JSON lines (each record with its hash)."""
    with OutputFiles(out=out) as tmp, existing_store(store, mode="read") as g:
        n = g.export_audit(tmp["out"] if out is not None else sys.stdout)
    if out is not None:
        typer.echo(f"{out}: {n} audit records", err=True)
