"""Sequence check and quality gate on constructed ten-print transactions (synthetic rolled prints and slaps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import biomatch as bm
from biomatch.formats import write_image_transaction
from biomatch.sequence import MIN_MINUTIAE, quality_gate
from biomatch.slap import segment_slap
from biomatch.synthetic_slap import make_slap, rolled_print
from biomatch.template import Template, make_minutiae

SMALL = (230, 300)  # small master fingers keep the tests fast; their light prints stay above MIN_TIP_AREA_SQIN
SUBJECT = 0


@pytest.fixture(scope="module")
def card():
    slaps = [make_slap(SUBJECT, p, tilt_deg=5.0, gap_px=40.0, finger_size=SMALL) for p in (13, 14, 15)]
    rolled = {f: rolled_print(SUBJECT, f, finger_size=SMALL) for f in range(1, 11)}
    return slaps, rolled


def _transaction(slaps, rolled, *, recorded=False) -> bytes:
    images = [{"position": f, "pixels": px, "ppi": 500.0, "impression": 1} for f, px in sorted(rolled.items())]
    for s in slaps:
        image = {"position": s.position, "pixels": s.pixels, "ppi": 500.0}
        if recorded:
            seg = segment_slap(s.pixels, s.position, 500.0, extract=False)
            image["segments"] = [(g.position, g.box.corners()) for g in seg.segments]
        images.append(image)
    return write_image_transaction(images, ori="TEST", tcn="SEQ-1")


def test_unswapped_card_raises_no_alarm(card):
    slaps, rolled = card
    check = bm.sequence_check(_transaction(slaps, rolled))
    assert check.verdict in ("pass", "incomplete")
    assert not [b for b in check.boxes if b.verdict == "swapped"]
    matched = [b.position for b in check.boxes if b.verdict == "match"]
    assert len(matched) >= 6  # most boxes are confirmed by their slap finger
    for b in check.boxes:
        if b.verdict == "match":
            assert b.own_fmr <= 1e-3 and b.own_score > 0
    assert set(check.segment_source.values()) == {"computed"}


def test_single_swap_is_detected_both_ways(card):
    slaps, rolled = card
    swapped = {**rolled, 2: rolled[3], 3: rolled[2]}
    check = bm.sequence_check(_transaction(slaps, swapped))
    assert check.verdict == "fail"
    assert check.box(2).verdict == "swapped" and check.box(2).swapped_with == 3
    assert check.box(3).verdict == "swapped" and check.box(3).swapped_with == 2
    assert any("rolled box 2 holds finger 3" in r for r in check.reasons)


def test_hand_swap_is_detected(card):
    slaps, rolled = card
    hands = {f: rolled[f + 5] if f <= 5 else rolled[f - 5] for f in range(1, 11)}
    check = bm.sequence_check(_transaction(slaps, hands))
    assert check.verdict == "fail"
    swaps = [b for b in check.boxes if b.verdict == "swapped"]
    assert len(swaps) >= 3
    for b in swaps:  # each swapped box holds the same finger of the other hand
        assert b.swapped_with == (b.position + 5 if b.position <= 5 else b.position - 5)


def test_recorded_segments_are_used(card):
    slaps, rolled = card
    swapped = {**rolled, 8: rolled[10], 10: rolled[8]}
    check = bm.sequence_check(_transaction(slaps, swapped, recorded=True))
    assert set(check.segment_source.values()) == {"recorded"}
    assert check.box(8).swapped_with == 10 and check.box(10).swapped_with == 8


def test_no_slaps_is_not_checked(card):
    _, rolled = card
    data = write_image_transaction([{"position": 2, "pixels": rolled[2], "ppi": 500.0, "impression": 1}],
                                   ori="TEST", tcn="SEQ-2")
    check = bm.sequence_check(data)
    assert check.verdict == "not_checked"
    assert check.reasons == ("no slaps: not checked",)
    assert check.quality[0].position == 2


def test_quality_gate():
    m = make_minutiae(np.arange(5) * 20.0 + 10, np.arange(5) * 20.0 + 10, np.zeros(5), np.ones(5, int), np.full(5, 80))
    few = Template(m, 200, 200, 500.0, 2, 90)
    decision = quality_gate(few, 2, "rolled")
    assert decision.decision == "retake" and f"5 minutiae < {MIN_MINUTIAE}" in decision.reason
    assert quality_gate(None, 3, "slap").decision == "retake"


def test_cli_check_transaction(card, tmp_path, capsys):
    from biomatch.cli import main

    slaps, rolled = card
    bad = tmp_path / "swapped.an2"
    bad.write_bytes(_transaction(slaps, {**rolled, 4: rolled[5], 5: rolled[4]}))
    assert main(["check-transaction", str(bad), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "fail"
    assert {b["position"]: b["swapped_with"] for b in doc["boxes"]}[4] == 5
    none = tmp_path / "rolled-only.an2"
    none.write_bytes(write_image_transaction([{"position": 2, "pixels": rolled[2], "ppi": 500.0}], ori="T", tcn="3"))
    code = main(["check-transaction", str(none)])
    out = capsys.readouterr()
    assert "sequence not_checked" in out.out and code == 0
    assert main(["check-transaction", str(tmp_path / "absent.an2")]) == 1
    assert "absent.an2" in capsys.readouterr().err


def test_enroll_transaction_refuses_a_swap_unless_overridden(card, tmp_path):
    from biomatch.errors import GalleryError

    slaps, rolled = card
    swapped = _transaction(slaps, {**rolled, 2: rolled[3], 3: rolled[2]})
    with bm.Gallery.open(tmp_path / "booking.db") as g:
        with pytest.raises(GalleryError, match="enrolment refused .*rolled box 2 holds finger 3"):
            g.enroll_transaction("s1", swapped, operator="desk-1")
        assert g.audit_records() == []  # nothing stored, nothing logged
        seq = g.enroll_transaction("s1", swapped, operator="desk-1", override=True)
        assert g.subjects() == ["s1"]
        (record,) = [r for r in g.audit_records() if r["seq"] == seq]
        intake = record["context"]["intake"]
        assert intake["sequence"] == "fail" and intake["override"] is True
        assert intake["boxes"]["2"] == "swapped with 3" and intake["slaps"]["13"]["segments_from"] == "computed"
        assert any("rolled box 2 holds finger 3" in r for r in intake["refused_reasons"])
        assert record["context"]["tcn"] == "SEQ-1"


def test_enroll_transaction_fills_missing_rolled_boxes_from_slaps(card, tmp_path):
    slaps, rolled = card
    few = {f: rolled[f] for f in (2, 3, 5, 8, 10)}  # the other boxes were not rolled
    with bm.Gallery.open(tmp_path / "booking.db") as g:
        seq = g.enroll_transaction("s2", _transaction(slaps, few), override=True)
        record = [r for r in g.audit_records() if r["seq"] == seq][0]
        from_slaps = record["context"]["intake"]["from_slaps"]
        assert from_slaps and not set(from_slaps) & set(few)
        assert set(g.get("s2").fingers) == set(few) | set(from_slaps)


def test_enroll_transaction_keeps_accepted_slap_segments_as_extra_impressions(card, tmp_path):
    from biomatch.cli import main
    from biomatch.errors import GalleryError

    slaps, rolled = card
    tx = _transaction(slaps, rolled)
    decision = bm.sequence.intake(tx)
    assert decision.sources == {f: "rolled" for f in range(1, 11)}
    kept = {(p, src) for p, src, _ in decision.slap_impressions}
    assert kept and {src for _, src in kept} <= {"slap 13", "slap 14", "slap 15"}
    accepted = {(q.position) for q in decision.check.quality if q.source == "slap" and q.decision == "accept"}
    assert {p for p, _ in kept} <= accepted
    with bm.Gallery.open(tmp_path / "booking.db") as g:
        with pytest.raises(GalleryError, match="keep_slap_impressions: expected True or False"):
            g.enroll_transaction("s0", tx, keep_slap_impressions="yes")
        g.enroll_transaction("plain", tx)
        assert g.get("plain").impressions == {}
        seq = g.enroll_transaction("s3", tx, keep_slap_impressions=True)
        got = g.get("s3")
        record = [r for r in g.audit_records() if r["seq"] == seq][0]
    stored = {(p, src) for p, v in got.impressions.items() for _, src, _ in v}
    assert stored == kept and got.sources == decision.sources
    assert {(i["position"], i["source"]) for i in record["impressions"]} == kept
    assert record["context"]["intake"]["slap_impressions_kept"] is True
    # a thumb in slaps 11/12 and 15 would get impressions 1 and 2: numbers run per finger
    for p, v in got.impressions.items():
        assert [n for n, _, _ in v] == list(range(1, len(v) + 1))
    # the CLI flag
    path = tmp_path / "card.an2"
    path.write_bytes(tx)
    store = tmp_path / "cli.db"
    assert main(["enroll", "c1", "--ebts", str(path), "--keep-slap-impressions", "--store", str(store), "--json"]) == 0
    with bm.Gallery.open(store) as g:
        assert {(p, src) for p, v in g.get("c1").impressions.items() for _, src, _ in v} == kept
    assert main(["enroll", "c2", "--finger", f"2={path}", "--keep-slap-impressions", "--store", str(store)]) == 1
