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


# ----------------------------------------------------------------------------
# exported heads: a cut tail with a re-pointed head is caught
# ----------------------------------------------------------------------------


def _cut_tail(con: sqlite3.Connection, keep: int) -> None:
    """What an attacker with write access does: delete the last records and re-point the stored head."""
    digest = con.execute("SELECT hash FROM audit WHERE seq = ?", (keep,)).fetchone()[0]
    con.execute("DELETE FROM audit WHERE seq > ?", (keep,))
    con.execute("UPDATE meta SET value = ? WHERE key = 'audit_count'", (str(keep),))
    con.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (digest,))


def test_a_cut_tail_with_a_repointed_head_fools_the_store_but_not_an_exported_head():
    con = _log(6)
    exported = audit.current_head(con)
    assert (exported.count, exported.hash) == audit.head(con)
    _cut_tail(con, 4)
    assert audit.verify(con) == 4  # the store alone cannot tell
    with pytest.raises(AuditError, match=r"audit head count=6 .*the log has only 4 records"):
        audit.verify_heads(con, [exported])
    # a log that grew since the head extends it; an older head is still proven
    con2 = _log(6)
    old = audit.current_head(con2)
    con2.execute("BEGIN IMMEDIATE")
    audit.append(con2, "search", "op", {})
    con2.execute("COMMIT")
    assert audit.verify_heads(con2, [old, audit.current_head(con2)]) == {"verified": 7, "heads": 2, "signed": 0, "unsigned": 2}


def test_a_rewritten_log_does_not_extend_an_exported_head():
    con = _log(5)
    exported = audit.current_head(con)
    # rewrite records 3.. and re-chain them consistently (edit, re-hash, re-point the head)
    previous = con.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0]
    for seq, text in con.execute("SELECT seq, record FROM audit WHERE seq >= 3 ORDER BY seq").fetchall():
        record = json.loads(text)
        record["operator"] = "someone else"
        text = audit.canonical_json(record)
        previous = audit.chain_hash(previous, text)
        con.execute("UPDATE audit SET record = ?, hash = ? WHERE seq = ?", (text, previous, seq))
    con.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (previous,))
    assert audit.verify(con) == 5
    with pytest.raises(AuditError, match=r"record 5 now has hash .*rewritten after this head"):
        audit.verify_heads(con, [exported])


def test_head_text_round_trips_and_short_form_parses():
    con = _log(3)
    h = audit.current_head(con)
    assert audit.AuditHead.parse(h.text()) == h
    short = audit.AuditHead.parse(f"{h.count}:{h.hash}")
    assert (short.count, short.hash, short.hmac) == (3, h.hash, None)
    for bad in ("", "3:xyz", "biomatch-audit-head/1 count=-1 hash=" + "0" * 64, "hello world"):
        with pytest.raises(AuditError):
            audit.AuditHead.parse(bad)


def test_signed_head_detects_a_forged_head():
    pytest.importorskip("cryptography")
    from biomatch.encryption import KeyRing, generate_key

    ring = KeyRing([generate_key()])
    con = _log(6)
    h = audit.current_head(con, ring)
    assert h.key_id == ring.preferred and len(h.hmac) == 64
    assert audit.verify_heads(con, [h], ring)["signed"] == 1
    # an attacker who cut the log to 4 records forges a head for it: without the key the HMAC is wrong
    digest4 = con.execute("SELECT hash FROM audit WHERE seq = 4").fetchone()[0]
    forged = audit.AuditHead.parse(h.text().replace("count=6", "count=4").replace(h.hash, digest4))
    with pytest.raises(AuditError, match="HMAC does not match"):
        audit.verify_heads(con, [forged], ring)
    # another store key cannot check it: reported as unsigned, not as proven
    assert audit.verify_heads(con, [h], KeyRing([generate_key()]))["unsigned"] == 1


def test_head_file_is_append_only_and_owner_only(tmp_path):
    import os
    import stat

    con = _log(2)
    path = tmp_path / "heads.txt"
    old = os.umask(0)
    try:
        audit.export_head(path, audit.current_head(con))
    finally:
        os.umask(old)
    con.execute("BEGIN IMMEDIATE")
    audit.append(con, "search", "op", {})
    con.execute("COMMIT")
    audit.export_head(path, audit.current_head(con))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    heads = audit.read_heads(path)
    assert [h.count for h in heads] == [2, 3]
    assert audit.verify_heads(con, heads)["heads"] == 2
    with pytest.raises(AuditError, match="neither a file nor an audit head"):
        audit.read_heads(str(tmp_path / "missing.txt"))


def _cut_store_tail(path, keep: int) -> None:
    con = sqlite3.connect(path)
    _cut_tail(con, keep)
    con.commit()
    con.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_store_whose_tail_was_cut_fails_against_its_exported_head(tmp_path, encrypted):
    from biomatch.gallery import Gallery

    key = None
    if encrypted:
        pytest.importorskip("cryptography")
        from biomatch.encryption import generate_key

        key = generate_key()
    store = tmp_path / "a.db"
    with Gallery.open(store, key=key) as g:
        for i in range(5):
            g.set_threshold(0.5 + i / 100, operator="admin")
        exported = g.audit_head()
        assert exported.count == len(g.audit_records()) and (exported.hmac is not None) == encrypted
        assert g.verify_audit_heads(exported.text())["signed"] == int(encrypted)
    _cut_store_tail(store, exported.count - 2)
    with Gallery.open(store, key=key) as g:
        assert g.verify_audit() == exported.count - 2 and g.check()["ok"]  # the store alone is fooled
        with pytest.raises(AuditError, match=f"audit head count={exported.count} .*the log has only {exported.count - 2}"):
            g.verify_audit_heads(exported)
        with pytest.raises(AuditError):
            g.verify_audit_heads(f"{exported.count}:{exported.hash}")


def test_heads_are_exported_to_the_head_file_as_the_log_grows(tmp_path, monkeypatch):
    from biomatch.gallery import Gallery

    heads = tmp_path / "heads.log"
    monkeypatch.setenv(audit.ENV_HEAD_FILE, str(heads))
    monkeypatch.setattr(audit, "HEAD_EXPORT_INTERVAL_S", 0.0)
    store = tmp_path / "a.db"
    with Gallery.open(store) as g:
        g.set_threshold(0.5, operator="admin")
        g.set_threshold(0.6, operator="admin")
        n = len(g.audit_records())
    lines = audit.read_heads(heads)
    assert [h.count for h in lines] == list(range(1, n + 1)) and lines[-1].count == n
    with Gallery.open(store) as g:
        assert g.verify_audit_heads(heads)["heads"] == n
    _cut_store_tail(store, n - 1)
    monkeypatch.delenv(audit.ENV_HEAD_FILE)
    with Gallery.open(store) as g:
        with pytest.raises(AuditError, match=f"count={n} .*only {n - 1} records"):
            g.verify_audit_heads(heads)


def test_the_last_head_goes_out_when_the_handle_closes(tmp_path, monkeypatch):
    from biomatch.gallery import Gallery

    monkeypatch.delenv(audit.ENV_HEAD_FILE, raising=False)
    heads = tmp_path / "heads.log"
    with Gallery.open(tmp_path / "a.db", audit_head_file=heads) as g:
        for i in range(3):  # within one export interval: only the first write exports at once
            g.set_threshold(0.5 + i / 10, operator="admin")
        assert [h.count for h in audit.read_heads(heads)] == [1]
        n = len(g.audit_records())
    assert [h.count for h in audit.read_heads(heads)] == [1, n]
    with Gallery.open(tmp_path / "a.db") as g:  # a handle that only reads exports nothing
        g.verify_audit_heads(heads)
    assert len(audit.read_heads(heads)) == 2


def test_cli_audit_head_and_verify_head(tmp_path, capsys):
    from biomatch.cli import main
    from biomatch.gallery import Gallery

    store = tmp_path / "a.db"
    with Gallery.open(store) as g:
        for i in range(4):
            g.set_threshold(0.5 + i / 10, operator="admin")
    heads = tmp_path / "heads.txt"
    assert main(["audit", "head", "--store", str(store), "--append", str(heads)]) == 0
    value = capsys.readouterr().out.strip()
    assert value.startswith("biomatch-audit-head/1 count=4 hash=") and audit.read_heads(heads)[0].text() == value
    assert main(["audit", "verify", "--store", str(store), "--head", value]) == 0
    assert "extends 1 exported heads" in capsys.readouterr().out
    _cut_store_tail(store, 3)
    assert main(["audit", "verify", "--store", str(store)]) == 0  # the store alone is fooled
    capsys.readouterr()
    for given in (value, str(heads)):
        assert main(["audit", "verify", "--store", str(store), "--head", given]) == 1
        err = capsys.readouterr().err
        assert "count=4" in err and "only 3 records" in err and err.count("\n") == 1
