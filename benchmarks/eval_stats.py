"""Eval's CPU work at the scale of a real evaluation (no models; issue 15, no target).

- Decontamination: `TrainingIndex` (vectorised RE2 normalisation + numpy n-gram hashing + sorted
  lookup) against the plain Python a user would write (a set of word 13-gram tuples of the
  training prompts, then each eval prompt's n-grams looked up), same normalisation rule for
  spaced text, both finding the same prompts. Ratio = Python time / prefsynth time.
- Statistics: `summarize` over a judgments table of LANGUAGES x PROMPTS x models with 1,000
  bootstrap resamples (CIs, macro, LC fits, Bradley-Terry), wall time only.

    .venv/bin/python benchmarks/eval_stats.py [--train 200000] [--eval 20000] [--languages 23] [--prompts 500]
"""
from __future__ import annotations

import argparse
import re
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from prefsynth.eval.decontaminate import TrainingIndex, ngram_hashes
from prefsynth.eval.stats import summarize

WORDS = np.array([f"w{i}" for i in range(20_000)])


def texts(rng, count: int, length: int = 40) -> list[str]:
    return [" ".join(row) for row in WORDS[rng.zipf(1.3, size=(count, length)) % len(WORDS)]]


def python_decontaminate(train: list[str], evals: list[str], n: int) -> list[bool]:
    def grams(text):
        tokens = re.sub(r"[^\w\s]+", " ", text.lower()).split()
        return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}

    seen = set()
    for text in train:
        seen |= grams(text)
    return [bool(grams(text) & seen) for text in evals]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=200_000)
    parser.add_argument("--eval", type=int, default=20_000)
    parser.add_argument("--languages", type=int, default=23)
    parser.add_argument("--prompts", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train, evals = texts(rng, args.train), texts(rng, args.eval)
    for i in range(0, args.eval, 10):  # plant overlaps in every tenth eval prompt
        evals[i] = " ".join(train[i].split()[5:20]) + " " + evals[i]
    t0 = time.perf_counter()
    index = TrainingIndex.__new__(TrainingIndex)
    hashes, rows = ngram_hashes(pa.array(train), 13)
    order = np.argsort(hashes, kind="stable")
    index.hashes, index.rows, index.n, index.ids = hashes[order], rows[order], 13, [str(i) for i in range(len(train))]
    found = [m is not None for m in index.matches(pa.array(evals))]
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    expected = python_decontaminate(train, evals, 13)
    theirs = time.perf_counter() - t0
    assert found == expected, "the two decontaminations disagree"
    print(f"decontamination: {args.train:,} training x {args.eval:,} eval prompts, {sum(found):,} contaminated: "
          f"prefsynth {ours:.2f} s, plain Python {theirs:.2f} s, ratio {theirs / ours:.1f}x")

    frames = []
    languages = [f"l{i}" for i in range(args.languages)]
    for model, p in (("a", [0.3, 0.2, 0.5]), ("b", [0.5, 0.2, 0.3])):
        n = args.languages * args.prompts
        frames.append(pd.DataFrame({
            "judge": "rm", "judge_type": "reward_model", "model": model, "baseline": "base",
            "prompt_id": [f"p{i}" for i in range(n)], "language": np.repeat(languages, args.prompts),
            "sample_index": 0, "model_answer": "x", "baseline_answer": "y", "model_tokens": 50, "baseline_tokens": 50,
            "model_chars": rng.integers(50, 900, n), "baseline_chars": rng.integers(50, 900, n),
            "model_in_language": rng.random(n) < 0.95, "baseline_in_language": rng.random(n) < 0.95,
            "judge_outcome": rng.choice([0.0, 0.5, 1.0], n, p=p), "position_inconsistent": False, "reason": None}))
    judgments = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    summarize(judgments, baseline="base", models=["a", "b"], judges=["rm"], bootstrap=1000)
    print(f"statistics: {len(judgments):,} judgments ({args.languages} languages x {args.prompts} prompts x 2 models), "
          f"1,000 resamples, with Bradley-Terry: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
