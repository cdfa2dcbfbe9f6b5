"""Coverage-guided fuzzing (atheris, libFuzzer) of biomatch's readers, one reader per run.

Readers: ``image`` (:func:`biomatch.io.read_image`: PNG/TIFF/BMP/JPEG/WSQ),
``minutiae`` (ISO/ANSI records, :func:`biomatch.formats.read_templates`),
``transaction`` (ANSI/NIST-ITL, :func:`biomatch.formats.read_transaction`)
and ``bmt`` (biomatch's own template format, :meth:`biomatch.Template.from_bytes`).
Any exception other than a ``BiomatchError`` is a crash (libFuzzer writes the
input as ``crash-*``); so is a segfault or a hang past ``-timeout``.

atheris is not a biomatch dependency: ``pip install atheris`` in a scratch
environment. Run (each reader for a bounded time)::

    python -m benchmarks.atheris_readers minutiae -max_total_time=60 -timeout=10 CORPUS_DIR

The seed corpus directory may hold sample files; libFuzzer prints the number
of executions (``#N``) at exit.
"""

from __future__ import annotations

import sys
import warnings


def _target(reader: str):
    from biomatch.errors import BiomatchError

    if reader == "image":
        from biomatch.io import read_image

        def call(data):
            read_image(data, ppi=500)
    elif reader == "minutiae":
        from biomatch.formats import read_templates as call
    elif reader == "transaction":
        from biomatch.formats import read_transaction as call
    elif reader == "bmt":
        from biomatch.template import Template

        call = Template.from_bytes
    else:
        raise SystemExit(f"reader: one of image, minutiae, transaction, bmt (got {reader!r})")

    def one(data: bytes) -> None:
        try:
            call(data)
        except BiomatchError:
            pass

    return one


def main() -> None:
    import atheris

    reader = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    warnings.simplefilter("ignore")
    with atheris.instrument_imports():
        target = _target(reader)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
