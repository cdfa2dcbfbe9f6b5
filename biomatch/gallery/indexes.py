"""FAISS index upkeep of each gallery: load, save, catch up from the change log, rebuild."""

from __future__ import annotations





class IndexesMixin:
    """Each gallery's FAISS index: load, save, catch-up, rebuild (part of :class:`Gallery`)."""

    def _save_index(self, idx, gallery: str) -> None:
        if self.read_only:  # a read-only handle keeps what it built in memory
            return
        idx.save(self._index_path(gallery), gallery, seal=self._index_crypt(gallery)[0])

    def _load_index(self, gallery: str):
        from ..index import GalleryIndex

        return GalleryIndex.load(self._index_path(gallery), gallery, unseal=self._index_crypt(gallery)[1],
                                 flat_max_codes=self.params.flat_max_codes, ivf_nprobe=self.params.ivf_nprobe)

    def _new_index(self, generation: int):
        """An empty index under this store's search params."""
        from ..index import GalleryIndex

        return GalleryIndex(generation, flat_max_codes=self.params.flat_max_codes, ivf_nprobe=self.params.ivf_nprobe)

    # -- index maintenance -------------------------------------------------------------
    def _index_added(self, gallery: str, gen_before: int, added: list) -> None:
        self._index_changed(gallery, gen_before, added, [])

    def _index_changed(self, gallery: str, gen_before: int, added: list, removed: list, save: bool = False) -> None:
        """Apply this process's own committed change to a loaded index that was current before it."""
        if added:
            self._put_features([(a[4], a[5]) for a in added])
        with self._index_lock:
            idx = self._indexes.get(gallery)
            if idx is None and gen_before == 0 and not self._index_path(gallery).exists():
                idx = self._indexes[gallery] = self._new_index(0)  # a new gallery: build as we enrol
            if idx is not None and idx.generation == gen_before:
                if removed:
                    idx.remove(removed)
                idx.add([(a[0], a[1], a[2]) for a in added], generation=gen_before + 1)
                self._dirty.add(gallery)
            if save:
                if idx is None and self._index_path(gallery).exists():
                    idx = self.index(gallery)  # load, catch up (drops the deleted fingers)
                if idx is not None:
                    self._save_index(idx, gallery)
                    self._dirty.discard(gallery)

    def index(self, gallery: str = "default"):
        """The gallery's :class:`biomatch.index.GalleryIndex`, loaded, caught up or rebuilt as needed."""

        con = self._con()
        gid, gen = self._require_gallery(con, gallery)
        with self._index_lock:
            idx = self._indexes.get(gallery)
            if idx is None:
                idx = self._load_index(gallery)
                if idx is not None and idx.generation > gen:
                    idx = None  # written against another state of the store
                if idx is None:
                    idx = self._rebuild(con, gid, gen)
                    self._save_index(idx, gallery)
                self._indexes[gallery] = idx
            if idx.generation < gen:
                n = self._catch_up(con, gid, idx)
                self._dirty.add(gallery)
                if n:
                    idx.generation = max(idx.generation, gen)
            return idx

    def rebuild_index(self, gallery: str = "default"):
        """Rebuild a gallery's index from the store and save it."""
        con = self._con()
        gid, gen = self._require_gallery(con, gallery)
        with self._index_lock:
            idx = self._rebuild(con, gid, gen)
            self._save_index(idx, gallery)
            self._indexes[gallery] = idx
            self._dirty.discard(gallery)
            return idx

    def _rebuild(self, con, gid: int, gen: int):
        idx = self._new_index(gen)
        # one consistent snapshot: generation and fingers read in one transaction
        con.execute("BEGIN")
        try:
            gen = con.execute("SELECT generation FROM galleries WHERE id = ?", (gid,)).fetchone()[0]
            idx.generation = gen
            rows = con.execute(
                "SELECT fingers.id, position, template FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                "WHERE gallery_id = ? ORDER BY fingers.id",
                (gid,),
            )
            self._add_rows(idx, rows)
        finally:
            con.execute("COMMIT")
        return idx

    def _add_rows(self, idx, rows, chunk: int = 2000) -> int:
        from ..descriptors import encode
        from ..index import finger_codes

        n = 0
        buf = []
        for fid, pos, blob in rows:
            t = self._template(blob, fid)
            buf.append((fid, pos, finger_codes(encode(t))))
            self._features.put(fid, t)
            if len(buf) >= chunk:
                idx.add(buf)
                n += len(buf)
                buf = []
        if buf:
            idx.add(buf)
            n += len(buf)
        return n

    def _catch_up(self, con, gid: int, idx) -> int:
        """Apply the store's changes after ``idx.generation``; returns the number applied."""
        con.execute("BEGIN")
        try:
            gen = con.execute("SELECT generation FROM galleries WHERE id = ?", (gid,)).fetchone()[0]
            changes = con.execute(
                "SELECT op, finger_id FROM changes WHERE gallery_id = ? AND generation > ? AND generation <= ? "
                "ORDER BY generation, rowid",
                (gid, idx.generation, gen),
            ).fetchall()
            dels = sorted({f for op, f in changes if op == "del"})
            adds = sorted({f for op, f in changes if op == "add"} - set(dels))
            if dels:
                idx.remove(dels)
                self._forget(dels)
            rows = []
            for i in range(0, len(adds), 500):
                part = adds[i : i + 500]
                q = ",".join("?" * len(part))
                rows += con.execute(f"SELECT id, position, template FROM fingers WHERE id IN ({q})", part).fetchall()
            self._add_rows(idx, rows)
            idx.generation = gen
        finally:
            con.execute("COMMIT")
        return len(changes) or 1
