"""What a stage is: a function from one input shard (and its config) to one output shard.

An `Op` holds a stage's config. `load()` returns the heavy resource it needs (a vLLM engine, a
reward model; None for CPU stages); `process(resource, shard)` maps one shard. Executors (local
process, worker process, later Ray) call these two and nothing else, so stages stay testable,
resumable and distributable. `spec()`/`from_spec()` let a worker process rebuild the op.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa


@dataclass
class ShardInput:
    shard: int
    prompts: pa.Table  # the prompts of this shard (every stage may need their messages/language)
    table: pa.Table | None  # upstream output for this shard (candidates, pairs, ...)
    context: dict[str, pa.Table] = field(default_factory=dict)  # other upstream tables, by stage


@dataclass
class ShardOutput:
    table: pa.Table
    rejects: pa.Table | None = None
    stats: dict[str, float] = field(default_factory=dict)  # e.g. output_tokens, for progress bars


class Op:
    uses_model: ClassVar[bool] = False

    def config(self) -> dict[str, Any]:
        """JSON-able config: hashed for resume, and enough for from_spec to rebuild the op."""
        raise NotImplementedError

    def load(self) -> Any:
        return None

    def load_key(self) -> str | None:
        """Equal keys mean `load()` returns an equivalent resource, so stages with equal keys can
        share one loaded model (the local executor runs them in one worker). None: never shared."""
        return None

    def warm_up(self) -> None:
        """Load what `process` loads on first use (models, lookup tables), so that a fresh worker
        process can be readied before its first shard arrives."""

    def process(self, resource: Any, shard: ShardInput) -> ShardOutput:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"op": f"{type(self).__module__}:{type(self).__qualname__}", "config": self.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Op":
        raise NotImplementedError


def op_from_spec(spec: dict[str, Any]) -> Op:
    module, name = spec["op"].split(":")
    return getattr(importlib.import_module(module), name).from_config(spec["config"])
