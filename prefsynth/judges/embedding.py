"""Embedding judge: one sentence-transformers vector per candidate answer, for the AMPO selectors
that pick rejected answers covering different regions of answer space. It scores nothing."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from prefsynth.config import EmbeddingJudge
from prefsynth.stages import Op, ShardInput, ShardOutput


class EmbedCandidates(Op):
    uses_model = True

    def __init__(self, judge: EmbeddingJudge):
        self.judge = judge

    def config(self) -> dict:
        return {"judge": self.judge.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "EmbedCandidates":
        return cls(EmbeddingJudge.model_validate(config["judge"]))

    def load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        from prefsynth.models import materialize
        from prefsynth.report.diversity import resolve_model

        device = None if self.judge.device == "auto" else self.judge.device
        return SentenceTransformer(resolve_model(materialize(self.judge.model)), device=device)

    def process(self, encoder: Any, shard: ShardInput) -> ShardOutput:
        from prefsynth.report.diversity import encode

        texts = shard.table.column("text").to_pylist()
        vectors = encode(encoder, [text or "" for text in texts], self.judge.batch_size)
        width = vectors.shape[1] if vectors.ndim == 2 else 0
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), width)
        return ShardOutput(shard.table.append_column(self.judge.name, column.cast(pa.list_(pa.float32()))),
                           None, {"embedded": len(texts)})
