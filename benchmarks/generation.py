"""Generation stage vs ONE raw vLLM `LLM.chat` over all prompts, same engine, prompts and seeds.

    .venv/bin/python benchmarks/generation.py                       # natural and fixed length, shards 64 and 256
    .venv/bin/python benchmarks/generation.py --modes natural --shard-sizes 256 --repeats 1   # quick look

Modes: `natural` (the default row) lets answers end at EOS, from a few tokens to `max_tokens`, as
real answers do; `fixed` uses `ignore_eos`, so every answer is `max_tokens` long. The peer is one
`LLM.chat` over all prompts with the stage's per-request seeds: the fastest a user gets from vLLM
by hand, sampling exactly what the stage samples. The unseeded raw rate shows the price of
per-request seeds apart (it is vLLM's). `raw seeded, token prompts` is what the stage sends, by
hand: the chat templates rendered in one batch, then one `LLM.generate` on the token ids (vLLM's
`chat` renders every conversation, one by one, before the first request starts). The stage is what a build runs: prompt shards read from
Parquet, length check, requests, candidates table with provenance, atomic Parquet writes; with
`max_shards_in_flight` shards against the one engine (feed.py) and, for comparison, one shard
after another (`in_flight 1`, the engine drains at every shard boundary).

Rates are output tokens / wall time. Each repeat runs every row once, in turn; a row's ratio is
the median over repeats of its rate / the seeded raw call's rate in the same repeat. Targets:
stage >= 1.0x the seeded raw call at shard size 256, >= 0.98x at 64.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from prefsynth.config import PipelineConfig  # noqa: E402  (light: no vLLM import)

TARGETS = {256: 1.0, 64: 0.98}


def demo_prompts(count: int) -> list[dict]:
    """`count` distinct prompts cycled from the demo's, as prompt rows."""
    from prefsynth.prompts.normalize import prompt_id

    corpus = [json.loads(line) for line in open(REPO / "pipelines" / "data" / "demo-prompts.jsonl")]
    rows = []
    for i in range(count):
        record = corpus[i % len(corpus)]
        messages = [{"role": "user", "content": record["prompt"] + ("" if i < len(corpus) else f" ({i})")}]
        rows.append({"prompt_id": prompt_id(record["language"], messages), "language": record["language"],
                     "messages": messages, "source": "bench", "source_row": i, "source_id": None})
    return rows


def run_stage(op, llm, prompts, shard_size: int, in_flight: int) -> int:
    """The generate stage over `prompts` in a fresh run directory: output tokens it wrote."""
    import pyarrow as pa

    from prefsynth.executor import StagePlan, process_shards
    from prefsynth.runs import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(tmp)
        prompt_stage = run.stage("prompts")
        prompt_stage.prepare("bench", {})
        shards = []
        for shard, start in enumerate(range(0, prompts.num_rows, shard_size)):
            prompt_stage.write_shard(shard, prompts.slice(start, shard_size))
            shards.append(shard)
        plan = StagePlan("generate.bench", op, [])
        run.stage(plan.name).prepare("bench", {})
        process_shards(run, plan, shards, llm, progress=False, in_flight=in_flight)
        tables = [run.stage(plan.name).read_shard(s) for s in shards]
        return int(pa.concat_tables(tables)["completion_tokens"].to_numpy().sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="fixture:tiny-chat")
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--modes", default="natural,fixed")
    parser.add_argument("--shard-sizes", default="64,256")
    parser.add_argument("--in-flight", type=int, default=PipelineConfig.model_fields["max_shards_in_flight"].default)
    parser.add_argument("--no-sequential", action="store_true", help="Skip the in_flight 1 stage rows.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-model-len", type=int, default=512)
    args = parser.parse_args()

    from vllm import SamplingParams

    from prefsynth import schemas
    from prefsynth.config import Engine, Generator
    from prefsynth.generate.vllm_generate import Generate, chat_token_ids

    rows = demo_prompts(args.prompts)
    prompts = schemas.from_rows(rows, schemas.PROMPTS)
    conversations = [r["messages"] for r in rows]
    engine = Engine(max_model_len=args.max_model_len, dtype="float32")
    shard_sizes = [int(s) for s in args.shard_sizes.split(",")]
    llm, startup = None, 0.0
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}")
    summary = []
    for mode in args.modes.split(","):
        generator = Generator(name="bench", model=args.model, n=args.n, temperature=1.0, max_tokens=args.max_tokens,
                              ignore_eos=mode == "fixed", engine=engine)
        op = Generate(generator, seed=0)
        if llm is None:
            t0 = time.perf_counter()
            llm = op.load()
            startup = time.perf_counter() - t0
        seeded = op.sampling_params([row["prompt_id"] for row in rows])
        unseeded = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, ignore_eos=mode == "fixed")

        def raw(params) -> int:
            outputs = llm.chat(conversations, params, use_tqdm=False)
            return sum(len(o.token_ids) for out in outputs for o in out.outputs)

        def raw_token_prompts() -> int:
            """What the stage sends (the templates rendered once, in one batch, then token prompts), by hand."""
            ids = chat_token_ids(llm.get_tokenizer(), conversations, add_generation_prompt=True)
            outputs = llm.generate([{"prompt_token_ids": i} for i in ids], seeded, use_tqdm=False)
            return sum(len(o.token_ids) for out in outputs for o in out.outputs)

        runs = {"raw seeded (one call)": lambda: raw(seeded), "raw unseeded (one call)": lambda: raw(unseeded),
                "raw seeded, token prompts": raw_token_prompts}
        for size in shard_sizes:
            runs[f"stage shard {size}, in_flight {args.in_flight}"] = (
                lambda size=size: run_stage(op, llm, prompts, size, args.in_flight))
            if not args.no_sequential:
                runs[f"stage shard {size}, in_flight 1"] = lambda size=size: run_stage(op, llm, prompts, size, 1)
        raw(seeded)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in runs}
        tokens: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                tokens[name] = fn()
                rates[name].append(tokens[name] / (time.perf_counter() - t))
        # The stage samples what the seeded raw call samples: the same tokens, whatever the batching.
        seeded_tokens = tokens["raw seeded (one call)"]
        for name in runs:
            if name != "raw unseeded (one call)" and tokens[name] != seeded_tokens:
                raise SystemExit(f"{name} wrote {tokens[name]} tokens, the seeded raw call {seeded_tokens}: "
                                 "samples depend on batching")
        # Ratios pair each run with the seeded raw call of the same round: on a shared machine the
        # rate drifts by tens of percent over minutes, which a ratio of two medians would carry.
        base = rates["raw seeded (one call)"]
        print(f"\nmode={mode} model={args.model} prompts={args.prompts} n={args.n} max_tokens={args.max_tokens} "
              f"repeats={args.repeats} engine_startup={startup:.1f}s output tokens={seeded_tokens:,} "
              f"(mean {seeded_tokens / args.prompts / args.n:.0f} per answer)")
        for name in runs:
            ratio = statistics.median(r / b for r, b in zip(rates[name], base))
            size = next((s for s in shard_sizes if name.startswith(f"stage shard {s},")), None)
            target = f"  (target >= {TARGETS[size]:.2f})" if size in TARGETS and f"in_flight {args.in_flight}" in name \
                and args.in_flight > 1 else ""
            print(f"  {name:<32}{statistics.median(rates[name]):>10,.0f} tok/s {ratio:>7.3f}x{target}   "
                  f"runs: {', '.join(f'{r:,.0f}' for r in rates[name])}")
            summary.append((mode, name, ratio))
    print("\nratios vs one seeded raw LLM.chat:")
    for mode, name, ratio in summary:
        print(f"  {mode:<8}{name:<32}{ratio:.3f}x")


if __name__ == "__main__":
    main()
