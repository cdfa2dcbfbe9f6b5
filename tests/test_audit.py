"""Hash-chained audit log: every edit, removal, insertion or reordering is detected."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomatch import audit
from biomatch.errors import AuditError


def _log(n: int) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:", isolation_level=None)
    con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.executescript(audit.SCHEMA)
    for i in range(n):
        con.execute("BEGIN IMMEDIATE")
        audit.append(con, "search", f"op{i % 3}", {"transaction_id": f"T{i}", "candidates": [{"rank": 1, "score": i / 10}]})
        con.execute("COMMIT")
    return con


def test_chain_verifies_and_hashes_link():
    con = _log(5)
    assert audit.verify(con) == 5
    recs = list(audit.records(con))
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    prev = audit.GENESIS
    for r in recs:
        body = {k: v for k, v in r.items() if k != "hash"}
        assert r["hash"] == audit.chain_hash(prev, audit.canonical_json(body))
        prev = r["hash"]
    assert audit.head(con) == (5, prev)
    assert recs[0]["time"].endswith("Z") and recs[0]["operator"] == "op0"


def test_empty_log_verifies():
    assert audit.verify(_log(0)) == 0


def test_canonical_json_is_order_independent():
    assert audit.canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == audit.canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})
    with pytest.raises(ValueError):
        audit.canonical_json({"x": float("nan")})


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 8), data=st.data())
def test_any_edit_is_detected(n, data):
    con = _log(n)
    seq = data.draw(st.integers(1, n))
    text = con.execute("SELECT record FROM audit WHERE seq = ?", (seq,)).fetchone()[0]
    rec = json.loads(text)
    rec["operator"] = rec["operator"] + "x"
    con.execute("UPDATE audit SET record = ? WHERE seq = ?", (audit.canonical_json(rec), seq))
    with pytest.raises(AuditError, match=f"record {seq}"):
        audit.verify(con)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 8), data=st.data())
def test_any_removal_is_detected(n, data):
    con = _log(n)
    seq = data.draw(st.integers(1, n))
    con.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    with pytest.raises(AuditError):
        audit.verify(con)


def test_reordering_is_detected():
    con = _log(4)
    a = con.execute("SELECT record, hash FROM audit WHERE seq = 2").fetchone()
    b = con.execute("SELECT record, hash FROM audit WHERE seq = 3").fetchone()
    con.execute("UPDATE audit SET record = ?, hash = ? WHERE seq = 2", b)
    con.execute("UPDATE audit SET record = ?, hash = ? WHERE seq = 3", a)
    with pytest.raises(AuditError, match="record 2"):
        audit.verify(con)


def test_rehashing_an_edit_still_breaks_the_next_link():
    con = _log(3)
    rec = json.loads(con.execute("SELECT record FROM audit WHERE seq = 2").fetchone()[0])
    rec["candidates"] = []
    text = audit.canonical_json(rec)
    prev = con.execute("SELECT hash FROM audit WHERE seq = 1").fetchone()[0]
    con.execute("UPDATE audit SET record = ?, hash = ? WHERE seq = 2", (text, audit.chain_hash(prev, text)))
    with pytest.raises(AuditError, match="record 3"):
        audit.verify(con)


def test_truncating_the_tail_is_detected_by_the_head():
    con = _log(4)
    con.execute("DELETE FROM audit WHERE seq = 4")
    with pytest.raises(AuditError, match="removed from the end"):
        audit.verify(con)


def test_non_canonical_text_is_detected():
    con = _log(2)
    text = con.execute("SELECT record FROM audit WHERE seq = 1").fetchone()[0]
    con.execute("UPDATE audit SET record = ? WHERE seq = 1", (json.dumps(json.loads(text), indent=1),))
    with pytest.raises(AuditError, match="record 1"):
        audit.verify(con)


def test_export_json_lines(tmp_path):
    from biomatch.gallery import Gallery

    with Gallery.open(tmp_path / "a.db") as g:
        g.set_threshold(0.5, operator="admin", transaction_id="T1")
        g.set_threshold(0.6, operator="admin")
        buf = io.StringIO()
        assert g.export_audit(buf) == 2
        lines = [json.loads(x) for x in buf.getvalue().splitlines()]
        assert [r["seq"] for r in lines] == [1, 2] and lines[1]["previous"] == 0.5
        assert g.export_audit(tmp_path / "audit.jsonl") == 2
        assert (tmp_path / "audit.jsonl").read_text().count("\n") == 2
