"""Reward-model judge stage vs ONE raw vLLM `LLM.encode` over all candidates, same pooling engine.

    .venv/bin/python benchmarks/reward.py [--model fixture:tiny-reward] [--prompts 2048] [--shard-sizes 64,256]

The candidates are the benchmark prompts of generation.py with 4 answers each, of lengths from a
one sentence to six (sentences of the language-ID test set, cycled). The peer is what a user
writes by hand: the reward model's chat template over every conversation, then one `encode` call
with the raw logits. The stage is what a build runs: candidate and prompt shards read from Parquet,
the same template and length check, `encode` per shard, score column and rejects, atomic Parquet
writes. Rates are candidates / wall time; a row's ratio is the median over interleaved repeats of its
rate / the raw call's rate in the same repeat.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

from generation import REPO, demo_prompts  # benchmarks/ is the script's folder, so on sys.path


def candidates_for(rows: list[dict], per_prompt: int) -> list[dict]:
    sentences = [json.loads(line)["text"] for line in open(REPO / "tests" / "data" / "langid_sentences.jsonl")]
    out = []
    for i, row in enumerate(rows):
        for k in range(per_prompt):
            words = " ".join(sentences[(i * per_prompt + k + j) % len(sentences)] for j in range(1 + (i + k) % 6))
            out.append({"prompt_id": row["prompt_id"], "candidate_id": f"{row['prompt_id']}/bench/{k}", "text": words})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="fixture:tiny-reward")
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--shard-sizes", default="64,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-model-len", type=int, default=512)
    args = parser.parse_args()

    import pyarrow as pa

    from prefsynth import schemas
    from prefsynth.config import Engine, RewardModelJudge
    from prefsynth.executor import StagePlan, process_shards
    from prefsynth.generate.vllm_generate import chat_token_ids
    from prefsynth.judges.reward import RewardModelScore, conversations, vllm_scores
    from prefsynth.runs import RunDir

    rows = demo_prompts(args.prompts)
    prompts = schemas.from_rows(rows, schemas.PROMPTS)
    candidates = pa.Table.from_pylist(candidates_for(rows, args.per_prompt))
    judge = RewardModelJudge(name="rm", type="reward_model", model=args.model,
                             engine=Engine(max_model_len=args.max_model_len, dtype="float32"))
    op = RewardModelScore(judge, seed=0)
    t0 = time.perf_counter()
    llm = op.load()
    startup = time.perf_counter() - t0

    def raw() -> int:
        ids = chat_token_ids(llm.get_tokenizer(), conversations(prompts, candidates), add_generation_prompt=False)
        return len(vllm_scores(llm, [one for one in ids if len(one) <= args.max_model_len]))

    def stage(shard_size: int) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            run = RunDir(tmp)
            for name in ("prompts", "generate.bench"):
                run.stage(name).prepare("bench", {})
            shards = []
            for shard, start in enumerate(range(0, prompts.num_rows, shard_size)):
                run.stage("prompts").write_shard(shard, prompts.slice(start, shard_size))
                run.stage("generate.bench").write_shard(
                    shard, candidates.slice(start * args.per_prompt, shard_size * args.per_prompt))
                shards.append(shard)
            plan = StagePlan("score.rm", op, ["generate.bench"])
            run.stage(plan.name).prepare("bench", {})
            process_shards(run, plan, shards, llm, progress=False)
            tables = [run.stage(plan.name).read_shard(s) for s in shards]
            return sum(t.num_rows - t.column(judge.score_column).null_count for t in tables)

    runs = {"raw (one encode call)": raw}
    for size in (int(s) for s in args.shard_sizes.split(",")):
        runs[f"stage shard {size}"] = lambda size=size: stage(size)
    raw()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            count = fn()
            rates[name].append(count / (time.perf_counter() - t))
    base = rates["raw (one encode call)"]  # ratios per round, as in generation.py
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}")
    print(f"model={args.model} candidates={candidates.num_rows:,} repeats={args.repeats} engine_startup={startup:.1f}s")
    for name in runs:
        ratio = statistics.median(r / b for r, b in zip(rates[name], base))
        print(f"  {name:<24}{statistics.median(rates[name]):>10,.0f} candidates/s {ratio:>7.3f}x   "
              f"runs: {', '.join(f'{r:,.0f}' for r in rates[name])}")


if __name__ == "__main__":
    main()
