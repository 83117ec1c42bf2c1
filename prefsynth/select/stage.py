"""The pipeline's select stage: one shard of filtered candidates -> pairs (or lists) + rejects."""
from __future__ import annotations

from pydantic import TypeAdapter

from prefsynth import schemas
from prefsynth.config import Selector
from prefsynth.stages import Op, ShardInput, ShardOutput

_SELECTOR = TypeAdapter(Selector)


class Select(Op):
    def __init__(self, selector):
        self.selector = selector

    def config(self) -> dict:
        return {"selector": self.selector.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "Select":
        return cls(_SELECTOR.validate_python(config["selector"]))

    def process(self, resource, shard: ShardInput) -> ShardOutput:
        from prefsynth.select import run

        selection = run(shard.table, self.selector, shard.prompts.column("prompt_id").to_pylist())
        dropped = selection.dropped
        rejects = schemas.from_rows(
            [{"stage": "select", **row} for row in dropped.to_pylist()], schemas.REJECTS
        ) if dropped.num_rows else schemas.REJECTS.empty_table()
        table = selection.selected
        return ShardOutput(table, rejects, {"pairs" if table.schema == schemas.PAIRS else "lists": table.num_rows})
