"""Selectors vs their plain per-prompt Python reference, same data, same run.

    .venv/bin/python benchmarks/select_vs_reference.py [--prompts 125000] [--per-prompt 8] [--repeats 3]

(Not named benchmarks/select.py: a script's folder comes first on sys.path, so a select.py there
would shadow the standard library's `select` for every benchmark script.)

1,000,000 candidates by default (125,000 prompts x 8; normal scores, 2% missing, 2% filtered
out) through every pair method, in two row layouts: grouped (each prompt's candidates together in
candidate_id order, as generation writes them) and shuffled (rows in random order, which costs
the vectorised side a sort). The reference (prefsynth/select/reference.py) is the
straightforward implementation: rows to dicts, one list per prompt, each method a few lines of
Python over it. Both must give identical pairs and dropped prompts (checked here, every run).
Target: the vectorised selector >= 20x the reference for best_worst, mu_sigma,
sweet_spot_scalable and margin (rso is iterative by nature and is reported only).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pyarrow as pa

from prefsynth.select import select
from prefsynth.select.reference import reference_select

METHODS = {  # method: (options, speed target or None)
    "best_worst": ({}, 20.0),
    "mu_sigma": ({}, 20.0),
    "sweet_spot_scalable": ({"m": 5}, 20.0),
    "margin": ({"min_margin": 0.5, "max_margin": 1.5}, 20.0),
    "rso": ({"beta": 0.5, "m": 8}, None),
}


def candidates(prompts: int, per_prompt: int, seed: int = 0, shuffled: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = prompts * per_prompt
    scores = rng.normal(size=n)
    scores[rng.random(n) < 0.02] = np.nan
    order = rng.permutation(n) if shuffled else np.arange(n)
    return pa.table({
        "prompt_id": np.repeat([f"{i:016x}" for i in sorted(rng.integers(0, 2**62, prompts))], per_prompt)[order],
        "candidate_id": np.array([f"cand/{i}" for i in range(per_prompt)] * prompts)[order],
        "score": scores[order],
        "keep": (rng.random(n) > 0.02)[order],
    })


def comparable(selection) -> tuple[list, dict]:
    rows = selection.pairs.drop_columns(["selector", "n_usable"]).to_pylist()
    return rows, dict(zip(selection.dropped["prompt_id"].to_pylist(), selection.dropped["reason"].to_pylist()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=125_000)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.prompts * args.per_prompt:,} candidates, {args.prompts:,} prompts; "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    results = []
    for layout in ("grouped", "shuffled"):
        table = candidates(args.prompts, args.per_prompt, shuffled=layout == "shuffled")
        for method, (options, target) in METHODS.items():
            fast_s = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fast = select(table, method, seed=0, **options)
                fast_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            slow = reference_select(table, method, seed=0, **options)
            slow_s = time.perf_counter() - start
            rows, dropped = comparable(fast)
            identical = rows == slow["pairs"] and dropped == slow["dropped"]
            ratio = slow_s / min(fast_s)
            results.append((layout, method, min(fast_s), slow_s, ratio, identical, target, fast.pairs.num_rows))
            print(f"  {layout} {method}: {min(fast_s):.3f} s vs reference {slow_s:.2f} s = {ratio:.1f}x, "
                  f"identical={identical}", flush=True)
    print()
    print(f"{'layout':<10}{'method':<22}{'pairs':>9}{'vectorised s':>14}{'reference s':>13}{'ratio':>8}  identical  target")
    for layout, method, fast_s, slow_s, ratio, identical, target, pairs in results:
        verdict = "-" if target is None else ("PASS" if ratio >= target and identical else "FAIL")
        print(f"{layout:<10}{method:<22}{pairs:>9,}{fast_s:>14.3f}{slow_s:>13.2f}{ratio:>7.1f}x  {str(identical):<9}  "
              f"{'>= %gx ' % target if target else ''}{verdict}")
    if not all(r[5] for r in results):
        raise SystemExit("vectorised and reference outputs differ")


if __name__ == "__main__":
    main()
