"""prefsynth's trainer vs TRL 1.16's DPOTrainer: real (non-padding) tokens/s and peak memory.

    python benchmarks/train_vs_trl.py       # GPU: rows 0.5b@1024, 1.5b@1024, 0.5b@2048; table last
    python benchmarks/train_vs_trl.py --rows 0.5b:1024            # one row
    python benchmarks/train_vs_trl.py --rows tiny:1024 --device cpu --steps 3 --warmup 1   # CPU check
    python benchmarks/train_vs_trl.py --rows 0.5b:1024 --device cpu --layers 2 --steps 2 --warmup 1  # 24 GiB CPU

`--layers N` keeps a shape's width and vocabulary but cuts its decoder layers: the logits memory that
chunked log-probs save depends on the vocabulary and the tokens, not on depth, so the memory gap
stays visible on a machine that cannot hold all 24 fp32 layers with AdamW.

A row is SHAPE:MAX_LENGTH; at max_length 2048 the sequences are twice as long (~1,060 tokens).

Every variant runs in its own process on the same random-weight model (built here from a Qwen2
config: no Hub; a byte-level BPE tokenizer whose reloaded token counts are checked) and the same synthetic conversational pairs (~`--tokens` tokens per sequence,
8 pairs per step): TRL with its defaults (gradient checkpointing, reference forward every step),
TRL tuned (precompute_ref_log_probs=True, gradient_checkpointing=False), and prefsynth (reference
log-probs precomputed and cached, packed sequences, chunked log-probs). Throughput counts real
tokens (prompt + completion, both sequences of a pair) over the timed steps after warm-up; the
reference pass that tuned TRL and prefsynth do once is not timed. Peak memory is
torch.cuda.max_memory_allocated (GPU) or the process's peak RSS (CPU).

Needs torch, transformers, trl 1.16 and datasets; installs nothing. On a machine without trl /
datasets, these wheels worked (pip install --no-deps --target DIR, then PYTHONPATH=DIR):
trl==1.16.0 datasets==4.8.4 dill==0.4.0 multiprocess==0.70.18.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # prefsynth from this checkout, uninstalled

SHAPES = {  # Qwen2 configurations (random weights)
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=False),
}
VARIANTS = ("trl_default", "trl_tuned", "prefsynth")


def build(folder: Path, shape: str, max_length: int, tokens: int, steps: int, layers: int | None = None,
          seed: int = 0) -> float:
    """A random-weight Qwen2 model, a byte-level BPE tokenizer trained on the synthetic words, and
    pairs of about `tokens` tokens per sequence. Returns the real tokens per step (8 pairs, both
    sequences, cut at max_length) as the reloaded tokenizer counts them.

    The words are letters only and the tokenizer is byte-level BPE: transformers reloads a tokenizer
    saved beside a Qwen2 config as Qwen2Tokenizer (Qwen2's pre-tokenizer), which keeps such a
    tokenizer's tokens but turned the earlier word-level one into 2 tokens per conversation."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(seed)
    syllable = lambda: rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou")  # noqa: E731
    words = sorted({"".join(syllable() for _ in range(rng.randint(1, 3))) for _ in range(3000)})
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator([text(50) for _ in range(2000)], trainers.BpeTrainer(
        vocab_size=min(3000, SHAPES[shape]["vocab_size"]), special_tokens=["<pad>", "<eos>", "<unk>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <eos> ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
    )
    tokenizer.save_pretrained(folder / "model")
    torch.manual_seed(seed)
    config = Qwen2Config(max_position_embeddings=max(4096, 2 * max_length),
                         **(SHAPES[shape] | ({"num_hidden_layers": layers} if layers else {})))
    Qwen2ForCausalLM(config).save_pretrained(folder / "model")
    per_word = len(tokenizer(text(1000)).input_ids) / 1000
    prompt_words, answer_words = int(tokens / 3 / per_word), int((tokens - tokens / 3 - 6) / per_word)
    rows = [{
        "prompt": [{"role": "user", "content": text(prompt_words)}],
        "chosen": [{"role": "assistant", "content": text(answer_words + rng.randint(-20, 20))}],
        "rejected": [{"role": "assistant", "content": text(answer_words + rng.randint(-20, 20))}],
    } for _ in range(8 * steps)]  # TRL's conversational format, no ids
    (folder / "data" / "pairs").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "pairs" / "train-00000-of-00001.parquet")
    reloaded = AutoTokenizer.from_pretrained(folder / "model")  # as both trainers load it
    lengths = [min(max_length, len(reloaded.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True)
                                   ["input_ids"])) for row in rows for side in ("chosen", "rejected")]
    return sum(lengths) / steps


def check_tokens(result: dict, expected_per_step: float, label: str) -> None:
    """The tokens a trainer counted per step must be the sequences built (within 5%), or its
    tokens/s measures something else."""
    if abs(result["tokens_per_step"] / expected_per_step - 1) > 0.05:
        raise SystemExit(f"{label}: {result['tokens_per_step']:.0f} tokens per step counted, "
                         f"{expected_per_step:.0f} built: the ratio would be meaningless")


def _peak(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def run_trl(folder: Path, tuned: bool, args) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    data = datasets.load_dataset("parquet", data_files=str(folder / "data" / "pairs" / "*.parquet"), split="train")
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder / "model", dtype=dtype),
        args=DPOConfig(
            output_dir=str(folder / "trl"), max_steps=args.warmup + args.steps, per_device_train_batch_size=8,
            max_length=args.max_length, report_to=[], save_strategy="no", logging_steps=1, use_cpu=not cuda,
            bf16=cuda, learning_rate=1e-6, disable_tqdm=True, dataloader_drop_last=True,
            **({"precompute_ref_log_probs": True, "gradient_checkpointing": False} if tuned else {}),
        ),
        train_dataset=data, processing_class=tokenizer, callbacks=[Clock()],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = [time.perf_counter()]
    trainer.train()
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    timed = tokens[-1] - tokens[args.warmup - 1] if args.warmup else tokens[-1]
    seconds = marks[-1] - (marks[args.warmup - 1] if args.warmup else started[0])
    return {"tokens_per_s": timed / seconds, "peak_gib": _peak(args.device), "loss": trainer.state.log_history[0]["loss"],
            "tokens_per_step": tokens[-1] / len(tokens)}


def run_prefsynth(folder: Path, args) -> dict:
    import torch

    from prefsynth.train import train

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train({
        "model": str(folder / "model"), "dataset": str(folder / "data"), "output_dir": str(folder / "ours"),
        "batch_size": 8, "max_steps": args.warmup + args.steps, "max_length": args.max_length,
        "learning_rate": 1e-6, "dtype": "bfloat16" if cuda else "float32", "device": args.device,
    }, progress=False)
    previous = result.metrics[args.warmup - 1]["num_tokens"] if args.warmup else 0
    tokens = seconds = 0.0
    for record in result.metrics[args.warmup:]:  # each step's tokens over its own time
        step_tokens, previous = record["num_tokens"] - previous, record["num_tokens"]
        tokens += step_tokens
        seconds += step_tokens / record["tokens_per_s"]
    return {"tokens_per_s": tokens / seconds, "peak_gib": _peak(args.device), "loss": result.metrics[0]["loss"],
            "tokens_per_step": result.metrics[-1]["num_tokens"] / len(result.metrics)}


def failure(done: subprocess.CompletedProcess) -> str:
    """Why a variant's process gave no result: a signal (the OOM killer leaves no stderr) or its stderr."""
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return f"killed ({name}{', likely OOM' if name == 'SIGKILL' else ''})\n{done.stderr[-3000:]}"
    return f"exit {done.returncode}\n{done.stderr[-3000:]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="0.5b:1024,1.5b:1024,0.5b:2048", help="SHAPE:MAX_LENGTH,...")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5b", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=530, help="Tokens per sequence at max_length 1024 (scaled with it).")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--layers", type=int, default=None, help="Fewer decoder layers (width and vocabulary unchanged).")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        folder = Path(args.folder)
        result = run_prefsynth(folder, args) if args.worker == "prefsynth" else run_trl(folder, args.worker == "trl_tuned", args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    table = []
    for row in args.rows.split(","):
        shape, max_length = row.split(":")
        tokens = args.tokens * int(max_length) // 1024
        with tempfile.TemporaryDirectory(prefix="prefsynth-bench-") as tmp:
            expected = build(Path(tmp), shape, int(max_length), tokens, args.warmup + args.steps, args.layers)
            print(f"  {row}: {expected / 16:.0f} real tokens per sequence built", flush=True)
            for variant in args.variants.split(","):
                command = [sys.executable, __file__, "--worker", variant, "--folder", tmp, "--device", args.device,
                           "--max-length", max_length, "--steps", str(args.steps), "--warmup", str(args.warmup)]
                done = subprocess.run(command, capture_output=True, text=True,
                                      env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
                line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
                if line is None:
                    print(f"{row} {variant} failed: {failure(done)}", file=sys.stderr)
                    table.append((shape, max_length, tokens, variant, {"failed": failure(done).splitlines()[0]}))
                    continue
                result = json.loads(line[len("RESULT "):])
                check_tokens(result, expected, f"{row} {variant}")
                table.append((shape, max_length, tokens, variant, result))
                print(f"  {row} {variant}: {result}", flush=True)
    layers = f"{args.layers} decoder layers; " if args.layers else ""
    print(f"\ndevice {args.device}; {layers}8 pairs/step; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'shape':<7}{'max_len':>8}{'tok/seq':>8}  {'variant':<13}{'tokens/s':>11}{'peak GiB':>10}{'vs TRL tuned':>14}")
    for shape, max_length, tokens, variant, result in table:
        if "failed" in result:
            print(f"{shape:<7}{max_length:>8}{tokens:>8}  {variant:<13}  {result['failed']}")
            continue
        base = next((r for s_, m, _, v, r in table if (s_, m, v) == (shape, max_length, "trl_tuned")), None)
        base = None if base is None or "failed" in base else base
        ratio = f"{result['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        print(f"{shape:<7}{max_length:>8}{tokens:>8}  {variant:<13}{result['tokens_per_s']:>11,.0f}"
              f"{result['peak_gib']:>10.2f}{ratio:>14}")


if __name__ == "__main__":
    main()
