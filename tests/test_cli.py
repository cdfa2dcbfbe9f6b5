"""The ``biomatch`` command as a Unix tool: every verb run in a subprocess.

Exit codes 0 (success), 1 (bad input, missing store), 2 (bad usage), 130 (Ctrl-C);
errors in one line (JSON under --json), never a traceback; output paths checked
before the work; no half-written output; a missing store is never created by a
verb that reads. Small synthetic data shared by module fixtures keeps it fast.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import sys
from pathlib import Path

import numpy as np
import pytest

import biomatch as bm
from biomatch.cli_conventions import OutputFiles


#: Where the subprocesses run unless told: not the checkout, whose source tree would shadow the
#: installed package (``python -m`` puts the working directory first on sys.path, and the source
#: tree has no compiled ``biomatch._native`` after a non-editable install, as in CI).
NEUTRAL_CWD = tempfile.gettempdir()


def run(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``biomatch ARGS`` in a fresh interpreter; never a traceback, whatever the outcome."""
    proc = subprocess.run([sys.executable, "-m", "biomatch.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or NEUTRAL_CWD, env=env)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    return proc


def one_error_line(proc, status: int, *, usage: bool = False) -> str:
    """The run failed with ``status``, saying so in one line on stderr (plus one usage line for bad usage)."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[0].startswith("biomatch: error: "), proc.stderr
    if usage:
        assert len(lines) == 2 and lines[1].startswith("Usage: biomatch") and "-h'" in lines[1], proc.stderr
    else:
        assert len(lines) == 1, proc.stderr
    return lines[0]


def json_error(proc, status: int, code: str) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    doc = json.loads(proc.stdout)
    assert doc["error"]["code"] == code and doc["error"]["exit_status"] == status
    return doc["error"]["message"]


def audit_count(store: Path) -> int:
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    finally:
        con.close()


# ---------------------------------------------------------------------------
# shared data: synthetic templates, a store, a few images, a scores file
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def templates(work) -> Path:
    out = work / "templates"
    proc = run("synth", "templates", "-n", 4, "-k", 2, "--seed", 3, "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def store(work, templates) -> Path:
    """Subjects s1..s4 enrolled (first impressions at position 1) by `enroll --folder`."""
    folder = work / "enrol"
    folder.mkdir()
    for f in range(1, 5):
        shutil.copy(templates / f"{f}_1.bmt", folder / f"s{f}_1.bmt")
    path = work / "site.db"
    proc = run("enroll", "--folder", folder, "--store", path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["enrolled"] == 4
    return path


@pytest.fixture(scope="module")
def images(work, synthetic_sample) -> Path:
    """An FVC-style folder of six synthetic images (three fingers, two impressions)."""
    out = work / "images"
    out.mkdir()
    for name in ("1_1", "1_2", "2_1", "2_2", "3_1", "3_2"):
        shutil.copy(synthetic_sample / f"{name}.png", out / f"{name}.png")
    return out


@pytest.fixture(scope="module")
def scores_csv(work) -> Path:
    rng = np.random.default_rng(0)
    path = work / "scores.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["probe", "reference", "score", "mated"])
        for f in range(40):
            w.writerow([f"D/{f}_1", f"D/{f}_2", rng.normal(0.08, 0.02), 1])
            for h in range(f + 1, 40):
                w.writerow([f"D/{f}_1", f"D/{h}_1", rng.gamma(2.0, 0.004), 0])
    return path


# ---------------------------------------------------------------------------
# bad usage: exit 2, one line and a usage hint
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, says", [
    ([], "no verb given"),
    (["nosuch"], "No such command"),
    (["verify"], "Missing argument"),
    (["verify", "--bogus", "a", "b"], "No such option: --bogus"),
    (["extract", "x.png", "--ppi", "abc"], "--ppi"),
    (["search", "--max-candidates", "many"], "--max-candidates"),
    (["synth"], "a sub-command is needed"),
    (["bench"], "a sub-command is needed"),
    (["audit"], "a sub-command is needed"),
])
def test_bad_usage_exits_2_with_one_line_and_a_hint(argv, says):
    proc = run(*argv)
    line = one_error_line(proc, 2, usage=True)
    assert says in line and proc.stdout == ""


def test_bad_usage_under_json_is_a_json_error():
    message = json_error(run("verify", "--json"), 2, "usage")
    assert "Missing argument" in message


def test_help_and_version():
    for argv in (["-h"], ["--help"], ["verify", "-h"], ["audit", "verify", "-h"], ["bench", "speed", "-h"]):
        proc = run(*argv)
        assert proc.returncode == 0 and "Usage" in proc.stdout, (argv, proc.stderr)
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"biomatch {bm.__version__}"
    top = run("-h").stdout
    for verb in ("extract", "verify", "enroll", "update", "search", "delete", "import", "info", "check", "backup",
                 "restore", "audit", "tune", "calibrate", "bench", "synth", "demo"):
        assert f" {verb} " in top, verb


# ---------------------------------------------------------------------------
# a missing store is an error, never created by a verb that reads
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["search", "-f", "1=T"], ["info"], ["check"], ["audit", "list"], ["audit", "verify"], ["audit", "export"],
    ["delete", "s1"], ["update", "s1", "-f", "1=T"], ["backup", "COPY"],
])
def test_reading_verbs_never_create_a_store(argv, work, templates):
    missing = work / "mistyped.db"
    argv = [a.replace("T", str(templates / "1_2.bmt")) if a == "1=T" else a for a in argv]
    argv = [str(work / "copy.db") if a == "COPY" else a for a in argv]
    line = one_error_line(run(*argv, "--store", missing), 1)
    assert f"{missing}: no such store" in line
    assert not missing.exists() and not (work / "copy.db").exists()


def test_missing_store_under_json(work, templates):
    missing = work / "mistyped.db"
    message = json_error(run("search", "-f", f"1={templates / '1_2.bmt'}", "--store", missing, "--json"), 1, "input")
    assert "no such store" in message and not missing.exists()


# ---------------------------------------------------------------------------
# the store verbs on a real store
# ---------------------------------------------------------------------------
def test_search_finds_the_mate_and_never_reports_fmr_below_the_floor(store, templates):
    proc = run("search", "-f", f"1={templates / '2_2.bmt'}", "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    cands = json.loads(proc.stdout)["candidates"]
    assert cands[0]["subject"] == "s2"
    from biomatch.calibration import default_calibration

    floor = default_calibration().fmr_floor
    assert all(c["fmr"] >= floor and f["fmr"] >= floor for c in cands for f in c["fingers"])
    assert cands[0]["fmr_is_bound"] is True and cands[0]["fmr"] == pytest.approx(floor)  # an identical print
    text = run("search", "-f", f"1={templates / '2_2.bmt'}", "--store", store)
    assert text.returncode == 0 and "default/s2" in text.stdout.splitlines()[0]


def test_info_check_and_audit_verbs(store, work):
    assert "s1" not in run("info", "--store", store).stderr
    info = json.loads(run("info", "--store", store, "--json").stdout)
    assert info["galleries"]["default"]["subjects"] == 4
    check = run("check", "--store", store)
    assert check.returncode == 0 and "consistent" in check.stdout
    assert run("audit", "list", "--store", store).returncode == 0
    verified = json.loads(run("audit", "verify", "--store", store, "--json").stdout)["verified"]
    assert verified == audit_count(store)
    out = work / "audit.jsonl"
    proc = run("audit", "export", "--store", store, "-o", out)
    assert proc.returncode == 0 and len(out.read_text().splitlines()) == audit_count(store)
    assert not list(work.glob(".audit.part-*"))


def test_update_delete_backup_restore_import(store, templates, work):
    copy = work / "scratch.db"
    assert run("backup", copy, "--store", store).returncode == 0
    proc = run("update", "s1", "-f", f"2={templates / '1_2.bmt'}", "--store", copy, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["replaced"] == [2]
    assert run("update", "nobody", "-f", f"2={templates / '1_2.bmt'}", "--store", copy).returncode == 1
    assert run("delete", "s4", "--store", copy).returncode == 0
    assert one_error_line(run("delete", "s4", "--store", copy), 1)
    restored = work / "restored.db"
    assert run("restore", copy, "--store", restored).returncode == 0
    merged = work / "merged.db"
    proc = run("import", restored, "--store", merged, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["imported"] == 3
    # enrolling someone already there names a verb that exists
    line = one_error_line(run("enroll", "s1", "-f", f"1={templates / '1_1.bmt'}", "--store", copy), 1)
    assert "(use update)" in line and run("update", "-h").returncode == 0


def test_enroll_reads_a_template_by_content_not_suffix(work, templates):
    data = work / "record.dat"
    data.write_bytes(bm.write_iso(bm.load_template(templates / "3_1.bmt")))
    path = work / "content.db"
    proc = run("enroll", "x", "-f", f"1={data}", "--store", path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["positions"] == [1]


def test_failed_enrolment_leaves_no_store(work):
    bad = work / "garbage.png"
    bad.write_bytes(b"not an image at all")
    path = work / "never.db"
    one_error_line(run("enroll", "x", "-f", f"1={bad}", "--store", path), 1)
    assert not path.exists()


def test_demo_failure_leaves_no_store(work):
    empty = work / "no-images"
    empty.mkdir()
    path = work / "demo.db"
    one_error_line(run("demo", "--data", empty, "--store", path), 1)
    assert not path.exists() and not list(work.glob("demo.db*"))


# ---------------------------------------------------------------------------
# prints and images
# ---------------------------------------------------------------------------
def test_extract_and_verify(images, work):
    iso, plot = work / "1_1.iso", work / "pairs.png"
    assert run("extract", images / "1_1.png", "-o", iso, "--json").returncode == 0
    assert bm.load_template(iso).width == 300
    genuine = run("verify", images / "1_2.png", iso, "--plot", plot, "--json")
    assert genuine.returncode == 0, genuine.stderr
    g = json.loads(genuine.stdout)
    assert plot.stat().st_size > 0 and not list(work.glob(".pairs.part-*"))
    impostor = json.loads(run("verify", images / "2_1.png", iso, "--json").stdout)
    # the pairs shown are those the score rests on: a non-match has few
    assert g["n_pairs"] == len(g["pairs"]) > impostor["n_pairs"]
    assert impostor["fmr_is_bound"] is False and impostor["fmr"] > 1e-3
    text = run("verify", images / "1_2.png", iso).stdout
    assert "minutiae pairs agree" in text and ("<= " in text) == g["fmr_is_bound"]


def test_bad_input_is_one_line_or_json(work):
    bad = work / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    line = one_error_line(run("verify", bad, bad), 1)
    assert str(bad) in line
    assert str(bad) in json_error(run("verify", bad, bad, "--json"), 1, "input")


def test_a_missing_resolution_warns_once_per_run(work, images):
    from PIL import Image

    names = []
    for name in ("1_1", "2_1"):
        p = work / f"nodpi_{name}.png"
        Image.open(images / f"{name}.png").save(p)  # no dpi
        names.append(p)
    proc = run("enroll", "w", "-f", f"1={names[0]}", "-f", f"2={names[1]}", "--store", work / "w.db")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("no resolution") == 1 and proc.stderr.count("1 more images without a resolution") == 1
    proc = run("enroll", "w2", "-f", f"1={names[0]}", "-f", f"2={names[1]}", "--ppi", "500", "--store", work / "w.db")
    assert proc.returncode == 0 and "resolution" not in proc.stderr


def test_output_paths_are_checked_before_the_work(work, images, scores_csv):
    line = one_error_line(run("extract", images / "1_1.png", "-o", work / "absent" / "x.iso"), 1)
    assert "--out" in line and "does not exist" in line
    line = one_error_line(run("calibrate", scores_csv, "-o", work), 1)
    assert "is a folder" in line
    a_file = work / "a-file"
    a_file.write_text("x")
    line = one_error_line(run("bench", "accuracy", scores_csv, "--out", a_file), 1)
    assert "not a folder" in line


def test_output_files_are_whole_or_absent(tmp_path):
    target = tmp_path / "out.json"
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with OutputFiles(out=target) as tmp:
                tmp["out"].write_text("half")
                raise exc
        assert not target.exists() and list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with OutputFiles(out=target) as tmp:
            tmp["out"].write_text("new, half")
            raise RuntimeError
    assert target.read_text() == "old"
    with OutputFiles(out=target, plot=None) as tmp:
        assert tmp["plot"] is None and tmp["out"].suffix == ".json"
        tmp["out"].write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_ctrl_c_exits_130_with_one_line(work, images):
    """A real SIGINT delivered while `verify` reads its first print: exit 130, one line, no plot written.

    The signal is raised from inside the verb's first file read (patched in the child process), so the
    test does not depend on timing; FIFOs, which once served to hold the verb, are now refused outright."""
    out = work / "interrupted.png"
    child = (
        "import os, signal, sys, time\n"
        "import biomatch.io as io\n"
        "def interrupted(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "io.read_file_head = interrupted\n"
        "from biomatch.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", child, "verify", str(images / "1_1.png"), str(images / "1_1.png"),
                           "--plot", str(out)], capture_output=True, text=True, cwd=NEUTRAL_CWD, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "biomatch: error: interrupted" and proc.stdout == ""
    assert not out.exists() and not list(work.glob(".interrupted.part-*"))


# ---------------------------------------------------------------------------
# EBTS intake
# ---------------------------------------------------------------------------
def _latent_only_transaction(path: Path) -> Path:
    nistitl = pytest.importorskip("nistitl")
    from biomatch.formats import write_transaction
    from biomatch.template import Template, make_minutiae

    t = Template(make_minutiae([20, 80, 120], [30, 90, 150], [0.3, 1.7, 3.9], [1, 2, 1], [40, 50, 60]), 200, 240, 500, 1)
    msg = nistitl.Message()
    msg.parse(write_transaction({1: t}, tot="CAR", ori="WV0000001", tcn="L-1", date="20261122"))
    del msg[1]  # the Type-9 record: only the latent remains
    r13 = nistitl.AsciiRecord(13)
    r13.IDC = 1
    for tag, value in {3: "4", 4: "SRC", 5: "20261122", 6: "30", 7: "40", 8: "1", 9: "500", 10: "500", 11: "NONE",
                       12: "8", 13: "0"}.items():
        r13 += nistitl.Field(13, tag, value)
    r13.DATA = np.full((40, 30), 200, np.uint8).tobytes()
    msg += r13
    path.write_bytes(msg.NIST)
    return path


def test_ebts_records_not_handled_are_named(work, store, templates):
    latent = _latent_only_transaction(work / "latent.eft")
    for verb in (["search", "--ebts", latent, "--store", store], ["enroll", "l1", "--ebts", latent, "--store", store]):
        line = one_error_line(run(*verb), 1)
        assert "not supported: Type-13 latent print record" in line
    line = one_error_line(run("search", "--ebts", latent, "-f", f"1={templates / '1_2.bmt'}", "--store", store), 1)
    assert "not both" in line


# ---------------------------------------------------------------------------
# tune, calibrate, bench, synth images
# ---------------------------------------------------------------------------
def test_scores_verbs(work, scores_csv):
    assert run("tune", scores_csv, "--target-fmr", "1e-2", "--json").returncode == 0
    cal = work / "cal.json"
    proc = run("calibrate", scores_csv, "-o", cal)
    assert proc.returncode == 0 and "support FMRs down to" in proc.stdout
    assert bm.Calibration.load(cal).metadata["n_scores"] == 40 * 39 // 2
    assert run("bench", "accuracy", scores_csv, "--json").returncode == 0
    assert one_error_line(run("tune", work / "absent.csv"), 1)


def test_bench_identification_and_speed(images, store, work):
    proc = run("bench", "identification", images, "--out", work / "ident", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (work / "ident" / "cmc.png").exists() and (work / "ident" / "identification.json").exists()
    before = audit_count(store)
    proc = run("bench", "speed", images, "--images", 2, "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["search"]["audited"] is False
    assert audit_count(store) == before  # timed searches went to a copy's audit log
    proc = run("bench", "speed", images, "--images", 2, "--store", store, "--audit", "--json")
    assert proc.returncode == 0 and audit_count(store) > before


def test_synth_images(work):
    out = work / "synth"
    proc = run("synth", "images", "-n", 1, "-k", 1, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == 1


# ---------------------------------------------------------------------------
# store modes: read-only stores, the template minimum
# ---------------------------------------------------------------------------
def _files(folder: Path) -> dict:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_gallery_open_modes(work, templates):
    from biomatch.errors import GalleryError

    missing = work / "modes" / "absent.db"
    for mode in ("write", "read"):
        with pytest.raises(GalleryError, match="no such store"):
            bm.Gallery.open(missing, mode=mode)
    with pytest.raises(GalleryError, match="mode"):
        bm.Gallery.open(missing, mode="append")
    with pytest.raises(GalleryError, match="applies to a store file"):  # not silently ignored for a cluster
        bm.Gallery.open("ray://somewhere?shards=2", mode="read")
    assert not missing.parent.exists()


def test_read_only_store_serves_reading_verbs_and_search(work, store, templates):
    import warnings

    from biomatch.errors import GalleryError

    folder = work / "ro"
    folder.mkdir()
    path = folder / "site.db"
    assert run("backup", path, "--store", store).returncode == 0
    for f in folder.iterdir():
        if f.name.endswith(".faiss") or f.name.endswith(".features"):
            f.unlink()  # derived files missing: a read-only handle rebuilds in memory, writes none
    before = _files(folder)
    n_records = audit_count(path)
    probe = {1: bm.load_template(templates / "3_2.bmt")}
    with bm.Gallery.open(path, mode="read") as g:
        assert g.read_only and g.stats()["galleries"]["default"]["subjects"] == 4
        assert g.verify_audit() == n_records and g.check()["ok"]
        with pytest.warns(UserWarning, match="not recorded in its audit log"):
            assert g.search(probe, operator="t")[0].subject == "s3"
        with pytest.raises(GalleryError, match="read-only"):
            g.enroll("x", probe, operator="t")
        with pytest.raises(GalleryError, match="read-only"):
            g.delete("s1", operator="t")
    for argv in (["info"], ["check"], ["audit", "verify"], ["audit", "list"], ["audit", "export"]):
        assert run(*argv, "--store", path).returncode == 0, argv
    after = _files(folder)
    assert after[path.name] == before[path.name] and audit_count(path) == n_records
    assert set(after) - set(before) <= {"site.db-wal", "site.db-shm"}  # SQLite's own read-only WAL index at most
    if os.geteuid() != 0:  # permissions bind: the CLI searches a store it cannot write read-only
        for f in folder.iterdir():
            f.chmod(0o444)
        folder.chmod(0o555)
        try:
            proc = run("search", "-f", f"1={templates / '3_2.bmt'}", "--store", path, "--json")
            assert proc.returncode == 0, proc.stderr
            doc = json.loads(proc.stdout)
            assert doc["audited"] is False and doc["candidates"][0]["subject"] == "s3"
            assert "not recorded in its audit log" in proc.stderr
            assert run("check", "--store", path).returncode == 0
        finally:
            folder.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with bm.Gallery.open(path, mode="write") as g:  # a writable store is searched with its audit record
            g.search(probe, operator="t")
    assert audit_count(path) == n_records + 1


def test_templates_below_the_minimum_are_refused_at_enrolment_and_search(work, store):
    from biomatch.gallery.checks import MIN_TEMPLATE_MINUTIAE
    from biomatch.template import Template, make_minutiae

    few = Template(make_minutiae([20, 80, 120], [30, 90, 150], [0.3, 1.7, 3.9], [1, 2, 1], [0, 0, 0]), 200, 240, 500, 1, 0)
    path = work / "few.iso"
    path.write_bytes(bm.write_iso(few))
    fresh = work / "few.db"
    line = one_error_line(run("enroll", "x", "-f", f"1={path}", "--store", fresh), 1)
    assert f"template has 3 minutiae, fewer than the {MIN_TEMPLATE_MINUTIAE}" in line and not fresh.exists()
    before = audit_count(store)
    line = one_error_line(run("search", "-f", f"1={path}", "--store", store), 1)
    assert "fewer than the" in line and audit_count(store) == before


def test_low_quality_template_is_flagged_not_refused(work):
    from biomatch.gallery.checks import LOW_TEMPLATE_QUALITY, TemplateQualityWarning
    from biomatch.template import Template, make_minutiae

    rng = np.random.default_rng(5)
    n = 12
    t = Template(make_minutiae(rng.integers(10, 190, n), rng.integers(10, 230, n), rng.uniform(0, 6.2, n),
                               rng.integers(1, 3, n), rng.integers(40, 80, n)), 200, 240, 500, 1, LOW_TEMPLATE_QUALITY - 5)
    with bm.Gallery.open(work / "lowq.db") as g:
        with pytest.warns(TemplateQualityWarning, match="low finger quality"):
            g.enroll("q", {1: t}, operator="t")
        assert g.subjects() == ["q"]


def test_output_folder_is_filled_only_on_success(tmp_path):
    from biomatch.cli_conventions import OutputDir

    target = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):
        with OutputDir(target) as tmp:
            (tmp / "report.json").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one
    with OutputDir(target) as tmp:
        (tmp / "report.json").write_text("{}")
        (tmp / "det.png").write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert sorted(p.name for p in target.iterdir()) == ["det.png", "report.json"]


def test_a_store_made_by_a_failed_run_is_removed_unless_it_holds_a_record(tmp_path, templates):
    from biomatch.cli_conventions import removed_on_failure

    path = tmp_path / "new.db"
    (tmp_path / "keep.txt").write_text("not ours")
    with pytest.raises(RuntimeError):
        with removed_on_failure(path), bm.Gallery.open(path):
            raise RuntimeError("failed after the store was made")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    with pytest.raises(KeyboardInterrupt):  # a committed enrolment is never thrown away
        with removed_on_failure(path), bm.Gallery.open(path) as g:
            g.enroll("s", {1: bm.load_template(templates / "1_1.bmt")}, operator="t")
            raise KeyboardInterrupt
    with bm.Gallery.open(path, mode="read") as g:
        assert g.subjects() == ["s"]


def test_a_failed_check_under_json_is_one_document(work, store):
    path = work / "tampered.db"
    assert run("backup", path, "--store", store).returncode == 0
    con = sqlite3.connect(path)
    gid = con.execute("SELECT id FROM galleries").fetchone()[0]
    con.execute("INSERT INTO subjects(gallery_id, subject, created, updated) VALUES (?, 'ghost', 'x', 'x')", (gid,))
    con.commit()
    con.close()
    proc = run("check", "--store", path, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)  # one JSON document: the report itself
    assert doc["ok"] is False and any("ghost" in p for p in doc["problems"])
    text = run("check", "--store", path)
    assert text.returncode == 1 and "check found" in text.stderr.splitlines()[-1]


def test_a_refused_option_combination_exits_1(scores_csv):
    proc = run("tune", scores_csv, "--gallery-size", 100)
    assert "--target-fmr or --target-fpir is required" in one_error_line(proc, 1)
    assert "required" in json_error(run("tune", scores_csv, "--gallery-size", 100, "--json"), 1, "input")


def test_reading_verbs_on_a_read_only_medium(work, store, templates):
    """info, check, audit verify and search on a read-only file system (a read-only bind mount in a
    private mount namespace; skipped where that cannot be made): SQLite cannot even create its WAL
    index there, so the store is read as immutable."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to make a read-only mount")
    src, mnt = work / "medium-src", work / "medium"
    src.mkdir()
    mnt.mkdir()
    assert run("backup", src / "site.db", "--store", store).returncode == 0
    py = f"{sys.executable} -m biomatch.cli"
    script = (f"mount --bind {src} {mnt} && mount -o remount,ro,bind {mnt} || exit 77; "
              f"{py} info --store {mnt / 'site.db'} && {py} check --store {mnt / 'site.db'} && "
              f"{py} audit verify --store {mnt / 'site.db'} && "
              f"{py} search -f 1={templates / '2_2.bmt'} --store {mnt / 'site.db'} --json")
    proc = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True, text=True, cwd=NEUTRAL_CWD)
    if proc.returncode == 77 or "unshare failed" in proc.stderr or "Operation not permitted" in proc.stderr:
        pytest.skip(f"no read-only mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "not recorded in its audit log" in proc.stderr
    doc = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert doc["audited"] is False and doc["candidates"][0]["subject"] == "s2"


def test_demo_reports_fmrs_as_bounds_where_they_are(images, work):
    from biomatch.calibration import default_calibration

    proc = run("demo", "--data", images, "--store", work / "demo-ok.db", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    floor = default_calibration().fmr_floor
    for p in doc["probes"]:
        if p["mate_fmr"] is not None:
            assert p["mate_fmr"] >= floor and p["mate_fmr_is_bound"] == (p["mate_fmr"] == pytest.approx(floor))
    assert doc["median_mate_fmr_is_bound"] == (doc["median_mate_fmr"] <= floor)
    text = run("demo", "--data", images, "--store", work / "demo-ok.db").stdout
    assert ("median mate FMR <= " in text) == doc["median_mate_fmr_is_bound"]
