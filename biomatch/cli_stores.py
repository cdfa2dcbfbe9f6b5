"""How the verbs open a gallery store: the shared ``--store`` / ``--gallery`` / ``--operator`` options,
the "must already exist" rule, read-only opening for verbs that only read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .errors import BiomatchError

STORE_OPT = typer.Option(Path("biomatch.db"), "--store", help="Gallery store (SQLite file; must exist).")
NEW_STORE_OPT = typer.Option(Path("biomatch.db"), "--store", help="Gallery store (SQLite file; created if absent).")
GALLERY_HELP = "Gallery name."
OPERATOR_OPT = typer.Option(None, "--operator", help="Who does this (audit); default the login name.")


def existing_store_path(store: Optional[Path]) -> None:
    """Fail at once (before any work) when ``store`` is given and is not an existing store file."""
    if store is not None and not store.is_file():
        raise BiomatchError(f"{store}: no such store" + (" (a folder)" if store.is_dir() else "")
                            + "; `biomatch enroll` or `biomatch import` creates one")


def store_for_writing(store: Path, create: bool):
    """An open Gallery on ``store``; created only when ``create`` (``--create``) says so."""
    if create:
        from .gallery import Gallery

        return Gallery.open(store)
    return existing_store(store)


def existing_store(store: Path, mode: str = "write"):
    """An open Gallery on a store that must already exist (key from BIOMATCH_STORE_KEY); ``mode="read"``
    for verbs that only read: nothing is written, so they work on read-only stores and media."""
    from .gallery import Gallery

    existing_store_path(store)
    return Gallery.open(store, mode=mode)


def search_mode(store: Path) -> str:
    """A search is audited in its store; only a store that cannot be written is searched read-only."""
    writable = os.access(store, os.W_OK) and os.access(store.parent if str(store.parent) else Path("."), os.W_OK)
    return "write" if writable else "read"
