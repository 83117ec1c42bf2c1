"""Data parallel training under torchrun: FSDP2 shards, collectives and sharded checkpoints.

One process per device. Every rank reads and tokenizes the same data, takes its share
(`rank::world`) of each micro-batch, and runs the same number of forward/backward passes (a rank
with nothing left runs a zero-weight pass, since FSDP's all-gathers are collective). The loss is
scaled by the world size because FSDP averages gradients over ranks, so the global batch and its
gradient are the same for any number of processes. Without torchrun (WORLD_SIZE unset or 1)
every function here is the single-process identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def start(choice: str) -> tuple[Ranks, torch.device]:
    """This process's rank and device; joins torchrun's process group (NCCL on GPUs, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = choice.startswith("cuda") or (choice == "auto" and torch.cuda.is_available())
    if world == 1:
        return Ranks(), torch.device("cuda" if choice == "auto" and cuda else (choice if choice != "auto" else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks FSDP shards one by one: transformers names their classes in
    `_no_split_modules` (Qwen2DecoderLayer, LlamaDecoderLayer, ...)."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(f"cannot shard {type(model).__name__} with FSDP: it names no decoder layer class "
                         "(_no_split_modules)")
    return layers


def shard(module: torch.nn.Module, ranks: Ranks, device: torch.device, dtype: str) -> torch.nn.Module:
    """FSDP2: one unit per decoder layer, then the root (embeddings, norm, head). bf16 training
    keeps fp32 parameters and optimizer state, computes in bf16 and reduces gradients in fp32."""
    if not ranks.distributed:
        return module
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (ranks.world,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if dtype == "bfloat16" else MixedPrecisionPolicy())
    for layer in decoder_layers(module):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    return fully_shard(module, mesh=mesh, mp_policy=policy)


def _collective_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_across(values: dict[str, float], ranks: Ranks, device: torch.device) -> dict[str, float]:
    if not ranks.distributed:
        return values
    keys = sorted(values)
    total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(total)
    return dict(zip(keys, total.tolist()))


def max_across(value: int, ranks: Ranks, device: torch.device) -> int:
    if not ranks.distributed:
        return value
    total = torch.tensor([value], dtype=torch.int64, device=_collective_device(device))
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return int(total.item())


def from_main(value: Any, ranks: Ranks) -> Any:
    """Rank 0's value on every rank (cache decisions, cached arrays): ranks on other nodes may not
    see rank 0's files."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_pieces(pieces: dict[int, np.ndarray], ranks: Ranks) -> dict[int, np.ndarray]:
    """Every rank's {position: values}, merged, on every rank."""
    if not ranks.distributed:
        return pieces
    everyone: list[Any] = [None] * ranks.world
    dist.all_gather_object(everyone, pieces)
    return {key: value for part in everyone for key, value in part.items()}


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP's gradient norm, parameters) as the plain tensor it stands for."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
