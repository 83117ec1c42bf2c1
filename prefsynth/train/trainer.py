"""The training loop: reference log-probs once (cached beside the data), then packed policy steps.

Per optimizer step: `batch_size` pairs in `gradient_accumulation` packed micro-batches, loss =
mean over the step's pairs (TRL's per-batch mean), AdamW, gradient clipping, linear decay to 0
(the Hugging Face Trainer defaults TRL uses). One JSON line of metrics per step under TRL's names.
Checkpoints hold the model, optimizer, scheduler, RNG state and the data position; `resume`
continues the same loss curve. Under torchrun the same loop runs data parallel with FSDP2
(distributed.py): the global batch, and so the curve, does not depend on the number of processes.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from prefsynth.processes import pause_if
from prefsynth.train.config import TrainConfig
from prefsynth.train import distributed
from prefsynth.train.data import Sequences, load_rows, split_rows, tokenize
from prefsynth.train.distributed import Ranks, from_main, full_tensor, gather_pieces, shard, sum_across
from prefsynth.train.logprobs import CompletionLogps, sequence_logps
from prefsynth.train.losses import group_contrastive_loss, pair_loss
from prefsynth.train.reporting import Reporters, check_reporters

CHECKPOINT = "checkpoint"


def attention_kernel(choice: str, device: torch.device) -> str:
    if choice != "auto":
        return choice
    import importlib.util

    # SDPA measured fastest on the CPU (flex_attention runs uncompiled there: 6x slower at 16 x 530
    # tokens); flex_attention on a GPU is opt-in until the GPU rows measure it.
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def load_model(reference: str, dtype: str, device: torch.device, attention: str = "auto", move: bool = True):
    """The model on `device`, or left on the CPU (`move=False`) for FSDP to move shard by shard."""
    from transformers import AutoModelForCausalLM

    from prefsynth.models import materialize

    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        materialize(reference), dtype=torch_dtype, attn_implementation=attention_kernel(attention, device))
    return model.to(device) if move else model


def _fingerprint(reference: str) -> dict:
    from prefsynth.models import materialize

    folder = Path(materialize(reference))
    files = {p.name: p.stat().st_size for p in sorted(folder.glob("*")) if p.is_file()} if folder.is_dir() else {}
    config = (folder / "config.json").read_text() if (folder / "config.json").is_file() else reference
    return {"ref": reference, "config": hashlib.sha256(config.encode()).hexdigest(), "files": files}


def cache_dir(data_folder: Path | None) -> Path:
    """Where reference log-probs are cached: `<dataset>/_ref_logps/` beside `data/`, or beside the
    data files; for Hub names and mixtures, under prefsynth's cache. The underscore keeps Arrow's
    and datasets' file discovery away from it."""
    from prefsynth.fixtures import cache_root

    if data_folder is None:
        return cache_root() / "ref_logps"
    folder = data_folder
    if folder.name in ("pairs", "lists") and folder.parent.name == "data":
        folder = folder.parent.parent
    return folder / "_ref_logps"


def reference_logps(cfg: TrainConfig, datasets: list[tuple[Sequences, Path | None]], tokenizer, device,
                    ranks: Ranks = Ranks()) -> list[np.ndarray]:
    """Reference log-probs of every sequence of each (sequences, data folder), computed once in a
    no-grad pass and stored beside its data under a key of (reference model, tokenizer, chat
    template, max_length, pairs). The reference model is loaded once, and only if a cache misses;
    under torchrun it is sharded and the ranks split the batches, rank 0 writes the cache."""
    model, results = None, []
    for sequences, data_folder in datasets:
        key = hashlib.sha256(json.dumps({
            "model": _fingerprint(cfg.ref_model or cfg.model), "template": tokenizer.chat_template or "",
            "vocab": len(tokenizer), "max_length": cfg.max_length, "groups": sequences.keys,
            "tokens": hashlib.sha256(np.concatenate([np.asarray(s) for s in sequences.ids]).tobytes()).hexdigest(),
        }, sort_keys=True).encode()).hexdigest()[:24]
        cache = cache_dir(data_folder) / f"{key}.parquet"
        cached = from_main(pq.read_table(cache)["logps"].to_numpy() if ranks.main and cache.is_file() else None, ranks)
        if cached is not None:
            results.append(cached)
            continue
        if model is None:
            reference = load_model(cfg.ref_model or cfg.model, cfg.dtype, device, cfg.attention, move=not ranks.distributed)
            model = shard(CompletionLogps(reference, cfg.logprob_chunk), ranks, device, cfg.dtype).eval()
        begins = range(0, len(sequences.ids), 2 * cfg.batch_size)
        mine, pieces = begins[ranks.rank::ranks.world], {}
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16"):
            for turn in range(math.ceil(len(begins) / ranks.world)):
                if turn >= len(mine):
                    _idle_pass(model, grads=False)
                    continue
                part = slice(mine[turn], mine[turn] + 2 * cfg.batch_size)
                pieces[mine[turn]] = sequence_logps(model, sequences.ids[part],
                                                    sequences.completion_start[part]).float().cpu().numpy()
        pieces = gather_pieces(pieces, ranks)
        logps = np.concatenate([pieces[begin] for begin in sorted(pieces)]) if pieces else np.zeros(0)
        if ranks.main:
            cache.parent.mkdir(parents=True, exist_ok=True)
            temporary = cache.with_suffix(".tmp")
            # the reference it came from, readable without recomputing the key
            table = pa.table({"logps": logps}).replace_schema_metadata({"reference": cfg.ref_model or cfg.model})
            pq.write_table(table, temporary)
            temporary.replace(cache)
        results.append(logps)
    del model
    return results


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    metrics: list[dict]


def _order(groups: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(groups)


def _micro_batches(groups: np.ndarray, sequences: Sequences, tokens: np.ndarray, size: int, budget: int | None):
    """The step's groups in packed micro-batches: `size` groups each, or greedily up to `budget` tokens."""
    if budget is None:
        return [groups[begin: begin + size] for begin in range(0, len(groups), size)]
    batches, current, used = [], [], 0
    for group in groups:
        cost = int(tokens[sequences.rows_of(np.array([group]))].sum())
        if current and used + cost > budget:
            batches.append(np.array(current))
            current, used = [], 0
        current.append(group)
        used += cost
    return batches + [np.array(current)]


def _idle_pass(model, grads: bool) -> None:
    """A zero-weight pass for a rank with no rows left in this round: FSDP's all-gathers and
    reduce-scatters are collective, so every rank runs the same number of passes."""
    logps = sequence_logps(model, [[0, 0]], [1])
    if grads:
        (logps.sum() * 0).backward()


def _policy(cfg: TrainConfig, device, ranks: Ranks) -> CompletionLogps:
    """The trained model as a CompletionLogps, sharded under torchrun (fp32 master weights)."""
    model = load_model(cfg.model, "float32" if ranks.distributed else cfg.dtype, device, cfg.attention,
                       move=not ranks.distributed)
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        options = cfg.lora.model_dump()
        model = get_peft_model(model, LoraConfig(r=options["r"], lora_alpha=options["alpha"], lora_dropout=options["dropout"],
                                                 target_modules=options["target_modules"], task_type="CAUSAL_LM"))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return shard(CompletionLogps(model, cfg.logprob_chunk), ranks, device, cfg.dtype).train()


def _step_losses(cfg: TrainConfig, sequences: Sequences, rows: np.ndarray, logps, ref, lengths, device):
    """Per-group losses of the rows' groups, and the sums behind the step's metrics."""
    reference = torch.tensor(ref[rows], device=device, dtype=torch.float32)
    reward = cfg.beta * (logps - reference).detach()
    chosen = torch.tensor(sequences.chosen[rows], device=device)
    group = sequences.group[rows]
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    bounds = list(zip(first, np.r_[first[1:], len(rows)]))
    if cfg.loss == "group_contrastive":
        weight = torch.tensor(sequences.weight[rows], device=device, dtype=torch.float32)
        losses = torch.stack([group_contrastive_loss((logps - reference)[a:b], chosen[a:b], weight[a:b], cfg.beta)
                              for a, b in bounds])
    else:
        if len(rows) != 2 * len(bounds):
            raise ValueError(f"loss {cfg.loss} needs pairs; use loss group_contrastive for list-wise data")
        size = lengths[rows].to(device)
        losses = pair_loss(cfg.loss, logps[0::2], logps[1::2], reference[0::2], reference[1::2], size[0::2], size[1::2], cfg)
    best_rejected = [reward[a:b][~chosen[a:b]].max() for a, b in bounds]
    worst_chosen = [reward[a:b][chosen[a:b]].min() for a, b in bounds]
    sums = {
        "chosen": reward[chosen].sum().item() / max(1, int(chosen.sum())) * len(bounds),
        "rejected": reward[~chosen].sum().item() / max(1, int((~chosen).sum())) * len(bounds),
        "accuracy": sum(float(c > r) for c, r in zip(worst_chosen, best_rejected)),
        "logps_c": logps.detach()[chosen].sum().item() / max(1, int(chosen.sum())) * len(bounds),
        "logps_r": logps.detach()[~chosen].sum().item() / max(1, int((~chosen).sum())) * len(bounds),
    }
    sums["margin"] = sums["chosen"] - sums["rejected"]
    return losses, sums


def train(config: TrainConfig | dict, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train on the config's data; under torchrun (WORLD_SIZE > 1) every rank calls this."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    check_reporters(cfg.report_to)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    owns_group = not torch.distributed.is_initialized()  # a process group the caller made stays the caller's
    ranks, device = distributed.start(cfg.device)
    try:
        return _train(cfg, out, ranks, device, resume=resume, progress=progress and ranks.main)
    finally:
        if owns_group:
            distributed.stop()


def _train(cfg: TrainConfig, out: Path, ranks: Ranks, device: torch.device, *, resume: bool,
           progress: bool) -> TrainResult:
    from transformers import AutoTokenizer

    from prefsynth.models import materialize

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(materialize(cfg.model))
    data, data_folder = load_rows(cfg.sources, cfg.seed)
    held, held_folder = None, None
    if cfg.eval_fraction:
        (data, held), held_folder = split_rows(data, cfg.eval_fraction, cfg.seed), data_folder
    elif cfg.eval_sources:
        held, held_folder = load_rows(cfg.eval_sources, cfg.seed)
    where = ", ".join(s.label for s in cfg.sources)
    if data.kind == "lists" and cfg.loss != "group_contrastive":
        raise ValueError(f"{where} holds list-wise data (AMPO/MPO): use loss group_contrastive, not {cfg.loss}")
    total_rows = data.num_rows + sum(data.rejected.values())
    sequences = tokenize(data, tokenizer, cfg.max_length)
    data_summary = {"rows": total_rows, "trained": sequences.groups, "format": data.kind,
                    "conversational": data.conversational, "rejected": dict(sorted(data.rejected.items()))}
    if ranks.main:
        _write_json(out / "summary.json", {"data": data_summary})
    if sequences.groups == 0:
        raise ValueError(f"{where}: no row can be trained on ({total_rows} rows; left out: "
                         f"{', '.join(f'{n} {r}' for r, n in data.rejected.items()) or 'none'})")
    lengths = torch.tensor(sequences.completion_lengths(), dtype=torch.float32)
    tokens = sequences.lengths
    datasets = [(sequences, data_folder)]
    if held is not None:
        if held.kind != data.kind:
            raise ValueError(f"the eval data holds {held.kind} but the training data {data.kind}")
        held_sequences = tokenize(held, tokenizer, cfg.max_length)
        data_summary["eval"] = {"rows": held_sequences.groups, "rejected": dict(sorted(held.rejected.items()))}
        if held_sequences.groups:
            datasets.append((held_sequences, held_folder))
    refs = (reference_logps(cfg, datasets, tokenizer, device, ranks) if cfg.uses_reference
            else [np.zeros(len(s.ids)) for s, _ in datasets])
    ref = refs[0]
    held_out = None
    if len(datasets) > 1:
        held_sequences = datasets[1][0]
        held_out = (held_sequences, refs[1], torch.tensor(held_sequences.completion_lengths(), dtype=torch.float32))

    model = _policy(cfg, device, ranks)
    steps_per_epoch = max(1, sequences.groups // cfg.batch_size)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(cfg, optimizer, total_steps)
    step, seen_tokens = 0, 0
    metrics_path = out / "metrics.jsonl"
    if resume and from_main((out / CHECKPOINT / "state.json").is_file(), ranks):
        step, seen_tokens = _load_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, ranks)
        if ranks.main:
            lines = metrics_path.read_text().splitlines()[:step] if metrics_path.exists() else []
            metrics_path.write_text("".join(line + "\n" for line in lines))
    elif metrics_path.exists() and ranks.main:
        metrics_path.unlink()
    history = []
    reporters = Reporters(cfg.report_to if ranks.main else [], out, cfg.run_name or out.name,
                          cfg.model_dump(mode="json"), resume)
    bar = _progress(total_steps, step, progress)
    micro = cfg.batch_size // cfg.gradient_accumulation
    # a micro-batch is global: each rank takes its share of it, so a token budget is per rank
    budget = cfg.micro_batch_tokens * ranks.world if cfg.micro_batch_tokens else None
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        groups = _order(sequences.groups, cfg.seed, epoch)[position * cfg.batch_size: (position + 1) * cfg.batch_size]
        started = time.perf_counter()
        sums = dict.fromkeys(("loss", "chosen", "rejected", "accuracy", "margin", "logps_c", "logps_r"), 0.0)
        sums["tokens"] = 0
        for part_groups in _micro_batches(groups, sequences, tokens, micro, budget):
            mine = part_groups[ranks.rank::ranks.world]
            if len(mine) == 0:
                _idle_pass(model, grads=True)
                continue
            rows = sequences.rows_of(mine)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16"):
                logps = sequence_logps(model, [sequences.ids[i] for i in rows], sequences.completion_start[rows]).float()
            losses, part = _step_losses(cfg, sequences, rows, logps, ref, lengths, device)
            # FSDP averages gradients over ranks: scaling by the world size keeps the global batch's mean
            (losses.sum() * ranks.world / len(groups)).backward()
            part["loss"] = losses.detach().sum().item()
            part["tokens"] = int(tokens[rows].sum())
            for name, value in part.items():
                sums[name] += value
        sums = sum_across(sums, ranks, device)
        step_tokens = int(sums.pop("tokens"))
        norm = full_tensor(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm or float("inf")))
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen_tokens += step_tokens
        if device.type == "cuda":
            torch.cuda.synchronize()
        record = {
            "step": step, "epoch": round(step / steps_per_epoch, 4), **_named(sums, len(groups)),
            "grad_norm": float(norm), "learning_rate": learning_rate, "num_tokens": seen_tokens,
            "tokens_per_s": step_tokens / (time.perf_counter() - started),
        }
        if held_out is not None and (step == total_steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            record.update(_named(evaluate(cfg, model, *held_out, device, ranks), held_out[0].groups, prefix="eval_"))
        if step == 1:  # what the data lost, once, beside the first step's figures
            record.update({"data/rows": total_rows, "data/trained": sequences.groups,
                           **{f"data/rejected/{reason}": n for reason, n in data.rejected.items()}})
        history.append(record)
        if ranks.main:
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        reporters.log(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
            _save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, step, seen_tokens, ranks)
            pause_if("train", step)
    bar.close()
    reporters.close()
    _save_model(out / "model", model, ranks)  # the LoRA adapter alone when training one
    if ranks.main:
        tokenizer.save_pretrained(out / "model")
        _write_json(out / "summary.json", {"data": data_summary, "steps": step, "num_tokens": seen_tokens,
                                           "final": history[-1] if history else None})
    distributed.barrier(ranks)
    return TrainResult(out, step, history)


def _named(sums: dict, groups: int, prefix: str = "") -> dict:
    """Per-step (or per-eval) means under TRL's metric names."""
    names = {"loss": "loss", "chosen": "rewards/chosen", "rejected": "rewards/rejected", "accuracy": "rewards/accuracies",
             "margin": "rewards/margins", "logps_c": "logps/chosen", "logps_r": "logps/rejected"}
    return {prefix + name: sums[key] / groups for key, name in names.items()}


def evaluate(cfg: TrainConfig, model, sequences: Sequences, ref: np.ndarray, lengths: torch.Tensor, device,
             ranks: Ranks = Ranks()) -> dict:
    """Sums of the loss and reward metrics over held-out groups, in no-grad batches of batch_size
    (in eval mode, as TRL's evaluation loop), each batch split across ranks."""
    training = model.training
    model.eval()
    sums = dict.fromkeys(("loss", "chosen", "rejected", "accuracy", "margin", "logps_c", "logps_r"), 0.0)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16"):
        for begin in range(0, sequences.groups, cfg.batch_size):
            mine = np.arange(begin, min(begin + cfg.batch_size, sequences.groups))[ranks.rank::ranks.world]
            if len(mine) == 0:
                _idle_pass(model, grads=False)
                continue
            rows = sequences.rows_of(mine)
            logps = sequence_logps(model, [sequences.ids[i] for i in rows], sequences.completion_start[rows]).float()
            losses, part = _step_losses(cfg, sequences, rows, logps, ref, lengths, device)
            part["loss"] = losses.sum().item()
            for name, value in part.items():
                sums[name] += value
    model.train(training)
    return sum_across(sums, ranks, device)


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    temporary.replace(path)


def _scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    """The Hugging Face Trainer's schedules under TRL's names: warmup_steps wins over warmup_ratio."""
    from transformers import get_scheduler

    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else math.ceil(total_steps * cfg.warmup_ratio)
    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, desc="train", unit="step")


def _save_model(folder: Path, module: CompletionLogps, ranks: Ranks) -> None:
    """save_pretrained of the trained model; under FSDP its full weights are gathered to rank 0's CPU first."""
    inner = module.model
    if not ranks.distributed:
        inner.save_pretrained(folder)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=hasattr(inner, "peft_config")))
    # gathered, tied weights (embeddings and LM head) are two tensors: keep the name save_pretrained keeps
    tied = ({name for name, _ in inner.named_parameters(remove_duplicate=False)}
            - {name for name, _ in inner.named_parameters()})
    if ranks.main:
        inner.save_pretrained(folder, state_dict={name: value for name, value in
                                                  ((key.removeprefix("model."), v) for key, v in state.items())
                                                  if name not in tied})


def _save_checkpoint(folder: Path, module: CompletionLogps, optimizer, scheduler, step: int, seen_tokens: int,
                     ranks: Ranks) -> None:
    """Written to a staging folder and renamed into place, so a kill leaves the previous checkpoint
    whole. One process: the model as save_pretrained plus optimizer.pt. Under torchrun: a
    torch.distributed.checkpoint folder (each rank writes its shards; any world size can load
    it) plus every rank's RNG state."""
    import shutil

    staging = folder.with_name(folder.name + ".tmp")
    if ranks.main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    distributed.barrier(ranks)
    if ranks.distributed:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(module, optimizer, options=_sharded_options(module))
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=staging / "dcp")
        torch.save({"torch_rng": torch.get_rng_state(), "scheduler": scheduler.state_dict()},
                   staging / f"rank-{ranks.rank}.pt")
    else:
        module.model.save_pretrained(staging / "model")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, staging / "optimizer.pt")
    distributed.barrier(ranks)
    if ranks.main:
        (staging / "state.json").write_text(json.dumps({"step": step, "num_tokens": seen_tokens, "world": ranks.world}))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        if old.exists():
            shutil.rmtree(old)
    distributed.barrier(ranks)


def _sharded_options(module: CompletionLogps):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    lora = hasattr(module.model, "peft_config")  # the frozen base model is not part of a LoRA checkpoint
    return StateDictOptions(ignore_frozen_params=lora, strict=not lora)


def _load_checkpoint(folder: Path, module: CompletionLogps, optimizer, scheduler, ranks: Ranks) -> tuple[int, int]:
    meta = json.loads((folder / "state.json").read_text())
    if (folder / "dcp").is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optimizer_state = get_state_dict(module, optimizer, options=_sharded_options(module))
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=folder / "dcp")
        set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=_sharded_options(module))
        own = folder / f"rank-{ranks.rank}.pt"
        rank_state = torch.load(own if own.is_file() else folder / "rank-0.pt", weights_only=False)
        scheduler.load_state_dict(rank_state["scheduler"])
        if own.is_file() and meta.get("world") == ranks.world:  # another world size starts fresh streams
            torch.set_rng_state(rank_state["torch_rng"])
        return meta["step"], meta["num_tokens"]
    if ranks.distributed:
        raise ValueError(f"{folder} was written by a one-process run: resume it with one process, or start over")
    from safetensors.torch import load_file

    model = module.model
    weights = {}
    for file in sorted((folder / "model").glob("*.safetensors")):
        weights.update(load_file(file))
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, weights)
    else:
        missing = model.load_state_dict(weights, strict=False).missing_keys
        tied = {name for name in missing if "lm_head" in name}
        if set(missing) - tied:
            raise RuntimeError(f"checkpoint {folder} lacks weights: {sorted(set(missing) - tied)[:5]}")
    state = torch.load(folder / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return meta["step"], meta["num_tokens"]
