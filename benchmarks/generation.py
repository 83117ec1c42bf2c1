"""Generation stage vs raw vLLM `LLM.chat`, same engine, prompts and sampling, in one run.

    .venv/bin/python benchmarks/generation.py [--model fixture:tiny-chat] [--prompts 384] [--max-tokens 128]

Both sides use `ignore_eos` and a fixed `max_tokens`, so they produce the same number of tokens.
The prefsynth side is the whole stage as a build runs it (read prompt shards, check lengths,
`LLM.chat` per shard, build the candidates table, write Parquet atomically). Target: ratio >= 0.97.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from prefsynth.config import PipelineConfig  # noqa: E402  (light: no vLLM import)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="fixture:tiny-chat")
    parser.add_argument("--prompts", type=int, default=384)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=PipelineConfig.model_fields["shard_size"].default)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-model-len", type=int, default=512)
    args = parser.parse_args()

    import pyarrow as pa
    from vllm import SamplingParams

    from prefsynth import schemas
    from prefsynth.config import Engine, Generator
    from prefsynth.executor import StagePlan, process_shards
    from prefsynth.generate.vllm_generate import Generate
    from prefsynth.prompts.normalize import prompt_id
    from prefsynth.runs import RunDir

    corpus = [json.loads(line) for line in open(REPO / "pipelines" / "data" / "demo-prompts.jsonl")]
    rows = []
    for i in range(args.prompts):
        record = corpus[i % len(corpus)]
        messages = [{"role": "user", "content": record["prompt"] + ("" if i < len(corpus) else f" ({i})")}]
        rows.append({"prompt_id": prompt_id(record["language"], messages), "language": record["language"],
                     "messages": messages, "source": "bench", "source_row": i, "source_id": None})
    prompts = schemas.from_rows(rows, schemas.PROMPTS)
    conversations = [r["messages"] for r in rows]

    generator = Generator(name="bench", model=args.model, n=args.n, temperature=1.0, max_tokens=args.max_tokens,
                          ignore_eos=True, engine=Engine(max_model_len=args.max_model_len, dtype="float32"))
    op = Generate(generator, seed=0)
    t0 = time.perf_counter()
    llm = op.load()
    startup = time.perf_counter() - t0
    # The peer samples exactly as the stage does: one seed per prompt. vLLM draws seeded requests'
    # random numbers one request at a time, which costs a tiny model on the CPU a lot; the
    # unseeded row shows that cost apart (it is vLLM's, not the stage's).
    seeded_params = op.sampling_params([row["prompt_id"] for row in rows])
    unseeded_params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, ignore_eos=True)

    def chat(params) -> int:
        outputs = llm.chat(conversations, params, use_tqdm=False)
        return sum(len(o.token_ids) for out in outputs for o in out.outputs)

    def raw() -> int:
        return chat(seeded_params)

    def unseeded() -> int:
        return chat(unseeded_params)

    def stage() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            run = RunDir(tmp)
            prompt_stage = run.stage("prompts")
            prompt_stage.prepare("bench", {})
            shards = []
            for shard, start in enumerate(range(0, prompts.num_rows, args.shard_size)):
                prompt_stage.write_shard(shard, prompts.slice(start, args.shard_size))
                shards.append(shard)
            plan = StagePlan("generate.bench", op, [])
            run.stage(plan.name).prepare("bench", {})
            process_shards(run, plan, shards, llm, progress=False)
            return int(pa.concat_tables(run.stage(plan.name).read_shard(s) for s in shards)["completion_tokens"].to_numpy().sum())

    raw()  # warm-up
    rates = {"raw": [], "prefsynth": [], "unseeded": []}
    for _ in range(args.repeats):
        for name, fn in (("raw", raw), ("prefsynth", stage), ("unseeded", unseeded)):
            t = time.perf_counter()
            tokens = fn()
            rates[name].append(tokens / (time.perf_counter() - t))
    raw_rate, ours = statistics.median(rates["raw"]), statistics.median(rates["prefsynth"])
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={__import__('os').cpu_count()}")
    print(f"model={args.model} prompts={args.prompts} n={args.n} max_tokens={args.max_tokens} "
          f"shard_size={args.shard_size} repeats={args.repeats} engine_startup={startup:.1f}s")
    print(f"raw vLLM LLM.chat : {raw_rate:,.0f} output tokens/s  (runs: {', '.join(f'{r:,.0f}' for r in rates['raw'])})")
    print(f"  (same, unseeded : {statistics.median(rates['unseeded']):,.0f} output tokens/s: vLLM's cost of per-request seeds)")
    print(f"prefsynth stage   : {ours:,.0f} output tokens/s  (runs: {', '.join(f'{r:,.0f}' for r in rates['prefsynth'])})")
    print(f"ratio prefsynth/raw = {ours / raw_rate:.3f}  (target >= 0.97)")


if __name__ == "__main__":
    main()
