"""Galleries: the SQLite store, enrolment, 1:N search with fusion, audit.

``Gallery.open(path)`` opens (or creates, file mode 0600) one SQLite store in
WAL mode with foreign keys on, holding any number of named galleries, their
subjects, up to eleven fingers per subject (ANSI/NIST-ITL FGP 0-10) as
compact templates (:meth:`biomatch.Template.to_bytes`), optional originals
(image or transaction bytes), the calibration, thresholds and the
hash-chained audit log (:mod:`biomatch.audit`). The store is the source of
truth; each gallery's FAISS index (:mod:`biomatch.index`) is derived data in
``<store>.<gallery>.faiss`` beside it, and so are the rescoring rows of the
enrolled templates in ``<store>.features`` (content-addressed by template
SHA-256, refilled lazily; see :class:`biomatch.gallery.features.FeatureStore`). Deleting a store means
deleting these files with it.

Layout
------
:class:`Gallery` is composed of one part per concern, each its own module:
``store`` (schema, connections, write transactions, reads), ``keys``
(encryption at rest, key rotation), ``features`` (rescoring rows: feature
file and caches), ``indexes`` (FAISS index upkeep), ``enrolment`` (enrol,
update, delete), ``transfer`` (import, check, backup, restore),
``thresholds`` (calibration and thresholds), ``searching`` (search
orchestration) and ``shard`` (the narrow API :mod:`biomatch.distributed`
calls); ``checks`` holds the argument checks. Shortlisting, ranking
and the result objects live in :mod:`biomatch.search`.

Protected data
--------------
Every file (store, WAL and shared-memory files, index files and their
temporary files, the feature file) is created readable and writable by its
owner only (0600), whatever the umask. Deletion is real: SQLite runs with
``secure_delete`` (freed cells and pages are zeroed), the WAL is checkpointed
and truncated after a deletion (when another reader blocks that, at the next
deletion or :meth:`Gallery.check`), the subject's rows in the feature file are
deleted the same way, and the gallery's index file is rewritten at once
without its codes. Opened with a key (``Gallery.open(path, key=...)`` or
``BIOMATCH_STORE_KEY``), templates and originals are stored AES-GCM
encrypted (:mod:`biomatch.encryption`); so are the derived files, which hold
biometric-derived data: the feature file's rows (rescoring features) are
sealed row by row, and each index file (bit-packed MCC cylinder codes, from
which minutia neighbourhoods could be approximated) is sealed as a whole and
decrypted into memory on load. What stays readable without the key: subject
ids, gallery names, metadata, finger positions, minutia counts and quality,
template SHA-256 digests and the audit log (which never holds biometric
data); metadata too, unless the store encrypts it (``encrypt_metadata``). :meth:`Gallery.rotate_key` re-encrypts under a new key while searches
go on.

Search
------
For every probe finger the index shortlists :data:`biomatch.search.shortlist.SHORTLIST_FINGERS`
gallery fingers by descriptor votes; the subjects owning them (at most
:data:`biomatch.search.shortlist.SHORTLIST_SUBJECTS`, by summed votes) are rescored exhaustively by
:mod:`biomatch.scoring`: each probe finger against the subject's finger of the
same position when both positions are known, against all of the subject's
fingers (best of) when either is unknown (0). A finger with extra
impressions (:class:`Impression`: schema 2 stores impression 0, the primary
print, and 1..9 beside it, each its own finger row, id and index entry)
scores as its best impression (:func:`biomatch.search.ranking.best_impressions`);
the shortlist counts the votes of a subject's impressions of one position as
one finger's. Ties are broken by explicit
rules that do not depend on a store's row ids: k-NN neighbours at equal
distance by subject id (:func:`biomatch.search.shortlist.merge_neighbours`), fingers and subjects of
equal votes by subject id (:func:`biomatch.search.shortlist.shortlist_subjects`), so that a sharded
gallery shortlists exactly as one store does (:mod:`biomatch.distributed`).
Enrolment derives the index codes and rescoring rows from the template as
stored (decoded from its bytes), so a store whose derived files are lost
scores identically once they are rebuilt.

Fusion rule (:func:`biomatch.search.ranking.rank`, the one ranking of a single
store and of a sharded gallery): each per-finger raw score ``s_i`` is
turned into its estimated false match rate ``p_i`` by the calibration (for a
finger scored as the best of ``m`` impressions, ``1 - (1 - p_i)^m``: an impostor
had ``m`` tries, :func:`biomatch.search.ranking.fmr_of_best`); the
subject's FMR is Fisher's combination of the ``k`` per-finger FMRs,
``FMR = P(chi2_2k >= -2 * sum(ln p_i))``, the probability that ``k``
independent non-mated comparisons are jointly at least this extreme. For one
finger it is that finger's FMR exactly. Candidates are ranked by it (ties by
the summed raw score); :attr:`Candidate.score` is the sum of the per-finger
raw scores. The false positive identification rate for the ``N`` subjects
searched is ``FPIR = 1 - (1 - FMR)^N``. A threshold (a raw single-finger
score, or a :class:`biomatch.calibration` threshold) is applied in the FMR
domain: a candidate is a hit when its FMR is at most the FMR of the
threshold score, which for one finger is exactly ``score >= threshold``.

Concurrency and crash safety
----------------------------
Any number of threads may search at once (each thread uses its own SQLite
connection; FAISS searches share a readers-writer lock). Writes take a
process-wide lock and ``BEGIN IMMEDIATE``, which also serialises writers of
other processes; every change and its audit record commit in one transaction
(``synchronous=FULL``), so a kill at any point loses at most the enrolment in
flight. Each gallery has a *generation* counter bumped by every change and a
``changes`` table of (generation, finger id, add/delete); an index file whose
generation is behind the store is caught up from it, one from another
version, gallery or a newer generation is rebuilt from the templates.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import threading
from pathlib import Path

from .. import encryption as _enc
from ..errors import GalleryError
from ..search.ranking import MAX_CANDIDATES  # noqa: F401 (re-exported)
from ..search.results import Candidate, FingerScore
from ..search.shortlist import SHORTLIST_FINGERS, SHORTLIST_SUBJECTS, SHORTLIST_SUBJECTS_MIN  # noqa: F401 (re-exported)
from . import features
from .enrolment import EnrolmentMixin
from .features import FeaturesMixin, FeatureStore, LRU
from .indexes import IndexesMixin
from .keys import KeysMixin, check_encrypt_metadata
from ..search.params import EXHAUSTIVE_MAX_FINGERS, SearchParams, check_params  # noqa: F401 (re-exported)
from .searching import SearchMixin
from .shard import ShardMixin
from .impressions import Impression
from .migrate import MAX_IMPRESSION  # noqa: F401 (re-exported)
from .store import SCHEMA_VERSION, StoreMixin, SubjectRecord, store_errors
from .thresholds import ThresholdsMixin
from .transfer import TransferMixin

__all__ = ["Gallery", "Candidate", "FingerScore", "SubjectRecord", "SearchParams", "SCHEMA_VERSION", "Impression"]



class Gallery(StoreMixin, KeysMixin, FeaturesMixin, IndexesMixin, EnrolmentMixin, TransferMixin, ThresholdsMixin,
              SearchMixin, ShardMixin):
    """A store of galleries with FAISS-indexed search (see the module docstring).

    Open with :meth:`open` (a context manager); the object is thread-safe.
    """

    def __init__(self, path, *, key=None, params=None, audit_head_file=None, mode="create", encrypt_metadata=None,
                 _token=None):
        if _token is not _OPEN_TOKEN:
            raise GalleryError("use Gallery.open(path) to open a gallery store")
        self.path = Path(path)
        self.params = check_params(params)  # how this handle searches (SearchParams)
        self._cal_cache = None  # (store calibration id or None, Calibration): see _calibration_entry
        self.read_only = mode == "read"  # nothing is written: see Gallery.open
        self.audit_head_file = audit_head_file  # None: the BIOMATCH_AUDIT_HEAD_FILE environment variable
        self._ring = _enc.KeyRing.from_user(key)
        check_encrypt_metadata(encrypt_metadata, self._ring is not None)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._feat_lock = threading.Lock()  # feature-file writes vs. deletions (see _put_features)
        self._index_lock = threading.RLock()
        self._indexes: dict = {}
        self._dirty: set[str] = set()
        self._features = LRU(features.TEMPLATE_CACHE_FINGERS, features.TEMPLATE_CACHE_BYTES)  # finger id -> Template (descriptors cached on it)
        self._packs = LRU(features.FEATURE_CACHE_FINGERS, features.FEATURE_CACHE_BYTES)  # finger id -> its rescoring rows, split (FeatureStore.split)
        self._arena = None  # FeatureArena once built, False when over FEATURE_ARENA_BYTES (see _feature_arena)
        self._arena_gen = 0  # bumped by every _forget: an arena built across one is not kept
        self._released = 0.0  # time.monotonic() of the last release_memory() after a search
        self._subject_counts: dict[int, tuple[int, int]] = {}  # gallery id -> (generation, subjects)
        self._featstore = FeatureStore(Path(f"{self.path}.features"), in_memory=self.read_only)
        self._closed = False
        try:
            self._init_store()
            self._init_keys(encrypt_metadata)
        except BaseException:
            self.close()
            raise

    # -- opening / closing -----------------------------------------------
    @classmethod
    def open(cls, path, *, key=None, params=None, audit_head_file=None, mode: str = "create",
             encrypt_metadata: bool | None = None) -> "Gallery":
        """Open (or create) the store at ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            SQLite file; created with mode 0600 with its folder when absent.
            ``"ray://DIR?shards=N"`` opens a gallery sharded over a Ray cluster
            (:class:`biomatch.distributed.ShardedGallery`; ``key`` opens its stores).
        key : bytes, str or list of them, optional
            AES key (16/24/32 bytes, or base64) for encryption at rest
            (:mod:`biomatch.encryption`); default the ``BIOMATCH_STORE_KEY``
            environment variable. A new or plaintext store opened with a key
            writes every later template and original encrypted (encrypt the
            rows already there with :meth:`rotate_key`); an encrypted store
            cannot be opened without its key (GalleryError, nothing changed).
        encrypt_metadata : bool, optional
            ``True``: subject metadata is encrypted too, bound to its subject
            (needs a key; set once, on a store without subjects: a store with
            subjects turns it on with ``rotate_key(key, encrypt_metadata=True)``,
            which seals what is there). A store that encrypts metadata keeps
            doing so (``False`` is refused there); ``None`` (the default)
            follows the store.
        audit_head_file : str or os.PathLike, optional
            Append-only file that receives the audit log's head
            (:class:`biomatch.audit.AuditHead`) after writes, at most every
            :data:`biomatch.audit.HEAD_EXPORT_INTERVAL_S`, and when the handle
            closes; default the ``BIOMATCH_AUDIT_HEAD_FILE`` environment
            variable (none: no export). Copy it to other media:
            :meth:`verify_audit_heads` proves the log still extends each head.
        mode : {"create", "write", "read"}
            ``"create"`` (the default): created when absent. ``"write"``: the
            store must exist (GalleryError naming the path otherwise), so that
            a mistyped path is never taken for a new, empty store. ``"read"``:
            the store must exist and nothing is written to it or beside it
            (SQLite read-only; works on read-only media and files): reads,
            :meth:`stats`, :meth:`check`, :meth:`verify_audit` and
            :meth:`search` work, an index that is missing or stale is built in
            memory only, and every change raises GalleryError. A search of a
            read-only store cannot append its audit record: it answers and
            warns (``UserWarning``) that it is not in the store's audit log.
        params : SearchParams, optional
            How searches shortlist and index (:class:`biomatch.search.params.SearchParams`;
            default the module constants). Not stored: each handle brings its own.

        Returns
        -------
        Gallery
            Use as a context manager (``with Gallery.open(p) as g:``) or call :meth:`close`.
        """
        opener = isinstance(path, str) and next((m for p, m in URL_OPENERS.items() if path.startswith(p)), None)
        if opener:  # a store reached by URL (ray://: biomatch.distributed, needs biomatch[distributed])
            if mode != "create":
                raise GalleryError(f"mode: {mode!r} applies to a store file, not to {path.split('?')[0]}")
            if encrypt_metadata is not None:
                raise GalleryError(f"encrypt_metadata: not supported for {path.split('?')[0]} (a store file only)")
            return importlib.import_module(opener).open_url(path, key=key, params=params)
        if not isinstance(path, (str, os.PathLike)):
            raise GalleryError(f"path: expected a file path, got {type(path).__name__}")
        if mode not in OPEN_MODES:
            raise GalleryError(f"mode: expected one of {', '.join(OPEN_MODES)}, got {mode!r}")
        if mode != "create" and not Path(path).is_file():
            raise GalleryError(f"{path}: no such store")
        return cls(path, key=key, params=params, audit_head_file=audit_head_file, mode=mode,
                   encrypt_metadata=encrypt_metadata, _token=_OPEN_TOKEN)

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r})"

    def close(self) -> None:
        """Save indexes changed by this process and close every connection."""
        if self._closed:
            return
        try:
            self.flush()
            if self._head_last is not None:  # this handle wrote: its last head goes out too
                self._export_head(force=True)
        finally:
            self._closed = True
            self._featstore.close()
            with self._conns_lock:
                for con in self._conns:
                    try:
                        con.close()
                    except sqlite3.Error:
                        pass
                self._conns.clear()

    def flush(self) -> None:
        """Write the indexes that changed since they were last saved (atomically); a read-only handle keeps them in memory."""
        if self.read_only:
            return
        with self._index_lock:
            for name in sorted(self._dirty):
                idx = self._indexes.get(name)
                if idx is not None:
                    self._save_index(idx, name)
            self._dirty.clear()


# every public method that reads or writes the store (one place, so that none is missed)
for _name in ("galleries", "enroll", "enroll_many", "update", "remove_impression", "delete", "delete_many", "import_from", "rotate_key", "get", "originals", "subjects",
              "stats", "index", "rebuild_index", "set_calibration", "calibration", "set_threshold", "threshold", "search",
              "check", "backup", "verify_audit", "audit_head", "verify_audit_heads", "audit_records", "export_audit", "flush",
              "subject_counts", "search_neighbours", "search_rescore", "search_pairs", "subject_keys",
              "search_calibration", "setting", "record"):
    setattr(Gallery, _name, store_errors(getattr(Gallery, _name)))
del _name

_OPEN_TOKEN = object()
#: Stores :meth:`Gallery.open` reaches by URL: prefix -> module whose ``open_url(url, *, key, params)``
#: opens it (imported only when such a URL is opened). Those modules build on Gallery; Gallery
#: does not import them.
URL_OPENERS = {"ray://": "biomatch.distributed"}
#: Modes of :meth:`Gallery.open`: create when absent, must exist, must exist and is only read.
OPEN_MODES = ("create", "write", "read")
