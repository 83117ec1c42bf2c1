"""Attention kernels on packed rows: 16 sequences of ~530 tokens in one row, position ids restarting.

    python benchmarks/packed_attention.py                        # GPU: sdpa, flex_attention, flash (if installed)
    python benchmarks/packed_attention.py --device cpu --layers 2  # CPU (flex_attention: forward only there)

SDPA gets the dense block-diagonal mask transformers derives from the position ids and computes
every query against every key of the row (16x the sequences' own attention work at 16 sequences);
flex_attention gets a document BlockMask and skips the blocks between sequences; flash-attention
varlen (when flash_attn is installed) takes cumulative sequence lengths. Each kernel runs the
policy's packed log-prob pass (prefsynth.train.logprobs.sequence_logps) of a random-weight
Qwen2-shaped model, forward and backward (forward only where a kernel has no backward on the
device); the figure is the median of `--repeats` after a warm-up, as a ratio against SDPA, with the
largest log-prob difference from SDPA.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_vs_trl import SHAPES  # noqa: E402  (same model shapes as the trainer benchmark)


def main() -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from prefsynth.train.logprobs import sequence_logps

    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5b")
    parser.add_argument("--layers", type=int, default=None, help="Fewer decoder layers (attention per layer is unchanged).")
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=530)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    shape = dict(SHAPES[args.shape], **({"num_hidden_layers": args.layers} if args.layers else {}))
    torch.manual_seed(0)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = Qwen2ForCausalLM(Qwen2Config(max_position_embeddings=4096, **shape)).to(args.device, dtype)
    generator = torch.Generator().manual_seed(0)
    lengths = [args.tokens + int(x) for x in torch.randint(-40, 40, (args.sequences,), generator=generator)]
    sequences = [torch.randint(0, shape["vocab_size"], (n,), generator=generator).tolist() for n in lengths]
    starts = [n // 3 for n in lengths]
    kernels = ["sdpa", "flex_attention", "eager"] + (["flash_attention_2"] if cuda and importlib.util.find_spec("flash_attn") else [])
    results, reference = [], None
    for kernel in kernels:
        model.set_attn_implementation(kernel)
        backward = cuda or kernel != "flex_attention"
        times = []
        for repeat in range(args.repeats + 1):
            model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            with torch.set_grad_enabled(backward):
                logps = sequence_logps(model, sequences, starts)
                if backward:
                    logps.sum().backward()
            if cuda:
                torch.cuda.synchronize()
            if repeat:  # the first call compiles / warms up
                times.append(time.perf_counter() - started)
        logps = logps.detach().float().cpu()
        reference = logps if reference is None else reference
        results.append((kernel, "fwd+bwd" if backward else "fwd", statistics.median(times),
                        float((logps - reference).abs().max())))
        print(f"  {kernel}: {results[-1]}", flush=True)
    print(f"\n{args.device}; {args.shape} shape, {shape['num_hidden_layers']} layers; {args.sequences} x ~{args.tokens} tokens "
          f"packed ({sum(lengths)} tokens); median of {args.repeats}")
    print(f"{'kernel':<19}{'pass':<9}{'seconds':>9}{'vs sdpa':>9}{'max |dlogp|':>13}")
    sdpa = results[0][2]
    for kernel, mode, seconds, difference in results:
        ratio = f"{sdpa / seconds:.2f}x" if mode == results[0][1] else "-"
        print(f"{kernel:<19}{mode:<9}{seconds:>9.3f}{ratio:>9}{difference:>13.2e}")


if __name__ == "__main__":
    main()
