"""Search logic shared by a single store and a sharded gallery: results, shortlist, ranking (no SQL, no Ray, no I/O).

- :mod:`~biomatch.search.results`: FingerScore, Candidate, SearchResult.
- :mod:`~biomatch.search.shortlist`: k-NN neighbours keyed by subject, merged over shards, votes, the
  subjects to rescore.
- :mod:`~biomatch.search.ranking`: FMRs, Fisher fusion, the candidate order, FPIR, the audit record.
- :mod:`~biomatch.search.params`: SearchParams, the settings an operator tunes.
"""

from .params import SearchParams

__all__ = ["SearchParams"]
