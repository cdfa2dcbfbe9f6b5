"""The end of a benchmark run: its JSON summary on stdout, in a file if asked, and the exit code."""

from __future__ import annotations

import json
from pathlib import Path


def finish(summary: dict, out: Path | None) -> int:
    """Print ``summary`` as one JSON line, write it to ``out`` too, and return 0 when ``summary["ok"]``, else 1."""
    text = json.dumps(summary)
    print(text, flush=True)
    if out:
        out.write_text(text)
    return 0 if summary["ok"] else 1
