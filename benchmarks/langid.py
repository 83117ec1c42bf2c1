"""Language-ID filter stage vs a plain fastText `predict` loop over the same texts, one run.

    .venv/bin/python benchmarks/langid.py [--texts 200000] [--repeats 3]

The plain loop is the least any pipeline must do: replace newlines (fastText rejects them) and
call predict once per text. The stage does all of its work: cleaning (code, URLs, whitespace),
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

from prefsynth import langid
from prefsynth.config import LanguageIdFilter
from prefsynth.filter.rules import apply_filters

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "langid_sentences.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    # Candidate-like texts: two or three sentences of one language, on separate lines.
    texts, languages = [], []
    for i in range(args.texts):
        a, b = rows[i % len(rows)], rows[(i // len(rows) * 7 + i) % len(rows)]
        same = [r for r in (a, b) if r["language"] == a["language"]]
        texts.append("\n".join(r["text"] for r in same) + ("\n" + a["text"] if i % 3 == 0 else ""))
        languages.append(a["language"])
    table = pa.table({"text": texts, "language": languages, "score": [0.0] * len(texts)})
    rule = LanguageIdFilter(type="language_id")
    model = langid.model()

    def plain() -> None:
        predict = model.predict
        for text in texts:
            predict(text.replace("\n", " "), k=1)

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
    print(f"plain fastText predict loop : {plain_rate:,.0f} texts/s")
    print(f"prefsynth language_id stage : {stage_rate:,.0f} texts/s  (kept {sum(kept) / len(kept):.1%})")
    print(f"ratio stage/plain = {stage_rate / plain_rate:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
