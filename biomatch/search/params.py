"""SearchParams: the search settings an operator tunes, frozen, passed to ``Gallery.open``.

The module constants (:data:`EXHAUSTIVE_MAX_FINGERS`, :data:`biomatch.search.shortlist.SHORTLIST_FINGERS`,
:data:`biomatch.index.FLAT_MAX_CODES`, ...) are the defaults; a store opened without params uses
them. A sharded gallery hands its params to every shard, so that it shortlists as one store would.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import check_int
from ..errors import GalleryError
from ..index import FLAT_MAX_CODES, IVF_NLIST, IVF_NPROBE
from .shortlist import SHORTLIST_FINGERS, SHORTLIST_SUBJECTS, SHORTLIST_SUBJECTS_MIN

#: Galleries up to this many fingers are rescored exhaustively (no shortlist).
EXHAUSTIVE_MAX_FINGERS = 200


@dataclass(frozen=True)
class SearchParams:
    """How a store searches (defaults: the module constants).

    Attributes
    ----------
    exhaustive_max_fingers : int
        Galleries of at most this many fingers are rescored whole, without the FAISS shortlist.
    shortlist_fingers : int
        Gallery fingers shortlisted per probe finger by descriptor votes.
    shortlist_subjects, shortlist_subjects_min : int
        Subjects rescored per search: ``max(shortlist_subjects_min, shortlist_subjects // probe fingers)``.
    flat_max_codes : int
        Codes up to which an index partition is flat and searched exhaustively (IVF beyond).
    ivf_nprobe : int
        IVF lists a query visits in a partition beyond ``flat_max_codes`` (1..IVF_NLIST).
    """

    exhaustive_max_fingers: int = EXHAUSTIVE_MAX_FINGERS
    shortlist_fingers: int = SHORTLIST_FINGERS
    shortlist_subjects: int = SHORTLIST_SUBJECTS
    shortlist_subjects_min: int = SHORTLIST_SUBJECTS_MIN
    flat_max_codes: int = FLAT_MAX_CODES
    ivf_nprobe: int = IVF_NPROBE

    def __post_init__(self):
        for name, low, high in (("exhaustive_max_fingers", 0, None), ("shortlist_fingers", 1, None),
                                ("shortlist_subjects", 1, None), ("shortlist_subjects_min", 1, None),
                                ("flat_max_codes", 0, None), ("ivf_nprobe", 1, IVF_NLIST)):
            object.__setattr__(self, name, check_int(getattr(self, name), f"params.{name}", low, high, error=GalleryError))


def check_params(params) -> SearchParams:
    """``params`` of ``Gallery.open``: a SearchParams, or None for the defaults."""
    if params is None:
        return SearchParams()
    if not isinstance(params, SearchParams):
        raise GalleryError(f"params: expected a biomatch.SearchParams, got {type(params).__name__}")
    return params
