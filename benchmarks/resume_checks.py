"""What the run directory's shard records cost (issue 14): writing a shard with its size, rows
and SHA-256 recorded in `_stage.json`, against a plain atomic Parquet write (the peer: what a
shard write was before records); and checking a finished stage on resume (size + checksum of
every file) against the existence check resume used before.

    .venv/bin/python benchmarks/resume_checks.py [--shards 2000] [--rows 256] [--big-shards 80]

Prints seconds and ratios; no target is set by the issue, the figures say what resume costs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from prefsynth.runs import RunDir, shard_name, write_parquet_atomic


def candidates(rows: int, seed: int) -> pa.Table:
    """A table shaped like a generate shard: 4 answers of ~600 characters per prompt."""
    rng = np.random.default_rng(seed)
    words = np.array(["the", "water", "cycle", "évaporation", "雨", "مطر", "बारिश", "rain", "clouds", "sea"])
    text = [" ".join(rng.choice(words, size=100)) for _ in range(rows * 4)]
    return pa.table({"prompt_id": [f"p{seed}-{i // 4}" for i in range(rows * 4)], "text": text,
                     "score": rng.normal(size=rows * 4)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=2000, help="small shards written (record overhead)")
    parser.add_argument("--rows", type=int, default=8, help="prompts per small shard")
    parser.add_argument("--big-shards", type=int, default=80, help="large shards checked on resume")
    parser.add_argument("--big-rows", type=int, default=256, help="prompts per large shard")
    args = parser.parse_args()
    table = candidates(args.rows, 0)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain"
        plain.mkdir()
        t0 = time.perf_counter()
        for shard in range(args.shards):
            write_parquet_atomic(table, plain / shard_name(shard))
        plain_s = time.perf_counter() - t0
        stage = RunDir(Path(tmp) / "run").stage("generate.x")
        stage.prepare("h", {})
        t0 = time.perf_counter()
        for shard in range(args.shards):
            stage.write_shard(shard, table)
        recorded_s = time.perf_counter() - t0
        print(f"write {args.shards} shards of {args.rows * 4} rows: plain {plain_s:.2f} s, with records "
              f"{recorded_s:.2f} s, ratio {recorded_s / plain_s:.2f}x")

        big = RunDir(Path(tmp) / "big").stage("generate.x")
        big.prepare("h", {})
        for shard in range(args.big_shards):
            big.write_shard(shard, candidates(args.big_rows, shard))
        size = sum(p.stat().st_size for p in big.path.glob("shard-*.parquet")) / 2**20
        t0 = time.perf_counter()
        exists = [big.has_shard(s) for s in range(args.big_shards)]
        exists_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        damaged = big.verify_shards()
        verify_s = time.perf_counter() - t0
        assert all(exists) and damaged == {}
        print(f"resume check of {args.big_shards} shards ({size:.0f} MiB): existence {exists_s * 1000:.1f} ms, "
              f"size + SHA-256 {verify_s * 1000:.1f} ms ({size / verify_s:.0f} MiB/s)")


if __name__ == "__main__":
    main()
