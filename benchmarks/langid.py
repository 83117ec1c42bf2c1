"""Language-ID filter stage vs a plain loop of the same backend over the same texts, one run.

    .venv/bin/python benchmarks/langid.py [--backend lid176|cld3|cld2|lingua|heliport] [--texts 200000] [--repeats 3]

The plain loop is the least any pipeline must do: for lid176, replace newlines (fastText rejects
them) and call predict once per text; for cld3 and cld2, their detect call once per text; for
lingua and heliport, their own parallel batch call over all texts. The stage does all of its work: cleaning (code, URLs, whitespace),
letter counts, script shares, the zh split, predictions and the keep/reason columns.
Target: stage throughput >= 0.9 x the plain loop.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import pyarrow as pa

from prefsynth import langid, langs, lid_backends
from prefsynth.config import LanguageIdFilter
from prefsynth.filter.rules import apply_filters

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "langid_sentences.jsonl"


def plain_loop(backend: str, texts: list[str]):
    if backend == "lid176":
        model = langid.model()

        def plain() -> None:
            predict = model.predict
            for text in texts:
                predict(text.replace("\n", " "), k=1)
    elif backend == "cld3":
        def plain() -> None:
            find = lid_backends._cld3_identifier().FindLanguage
            for text in texts:
                find(text=text)
    elif backend == "cld2":
        import pycld2

        def plain() -> None:
            for text in texts:
                pycld2.detect(text, bestEffort=True)
    elif backend == "lingua":
        def plain() -> None:
            lid_backends._lingua_detector().compute_language_confidence_values_in_parallel(texts)
    else:
        def plain() -> None:
            lid_backends._heliport_identifier().par_identify_with_score(texts)
    return plain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="lid176", choices=sorted(lid_backends.BACKENDS))
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    # the languages the backend has a label for (the filter refuses the others)
    rows = [r for r in rows if lid_backends.record_label(langs.get(r["language"]), args.backend) is not None]
    # Candidate-like texts: two or three sentences of one language, on separate lines.
    texts, languages = [], []
    for i in range(args.texts):
        a, b = rows[i % len(rows)], rows[(i // len(rows) * 7 + i) % len(rows)]
        same = [r for r in (a, b) if r["language"] == a["language"]]
        texts.append("\n".join(r["text"] for r in same) + ("\n" + a["text"] if i % 3 == 0 else ""))
        languages.append(a["language"])
    table = pa.table({"text": texts, "language": languages, "score": [0.0] * len(texts)})
    rule = LanguageIdFilter(type="language_id", backend=args.backend)
    plain = plain_loop(args.backend, texts)

    def stage() -> None:
        apply_filters(table, [rule], "score")

    stage()  # warm-up (registry, regex compilation)
    times = {"plain": [], "stage": []}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("stage", stage)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    plain_rate = args.texts / statistics.median(times["plain"])
    stage_rate = args.texts / statistics.median(times["stage"])
    kept = apply_filters(table, [rule], "score")["keep"].to_pylist()
    print(f"machine: {platform.machine()} cores={__import__('os').cpu_count()} texts={args.texts} repeats={args.repeats}")
    print(f"plain {args.backend} loop : {plain_rate:,.0f} texts/s  ({len({r['language'] for r in rows})} languages)")
    print(f"prefsynth language_id stage : {stage_rate:,.0f} texts/s  (kept {sum(kept) / len(kept):.1%})")
    print(f"ratio stage/plain = {stage_rate / plain_rate:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
