"""Search logic shared by a single store and a sharded gallery: results, shortlist, ranking (no SQL, no Ray, no I/O)."""
