"""Exported preference data -> token sequences, the way TRL 1.16's DPOTrainer builds them.

Conversational rows: the prompt goes through the chat template with the generation prompt; prompt
+ completion through the template without it; the completion is what follows their common
prefix. Each sequence (prompt + chosen, prompt + rejected) is cut to max_length from the end
(TRL's keep_start); pairs whose prompt alone fills max_length are dropped (no completion left).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _kind(file: Path) -> str:
    return "lists" if "chosen_ids" in pq.read_schema(file).names else "pairs"


def dataset_files(path: str | Path) -> tuple[list[Path], str]:
    """Parquet files and their kind (pairs or lists) from a run dir, a dataset dir, a folder of
    Parquet files or one file."""
    path = Path(path)
    if path.is_file():
        return [path], _kind(path)
    for folder in (path / "dataset" / "data", path / "data", path):
        for kind in ("pairs", "lists"):
            files = sorted((folder / kind).glob("*.parquet"))
            if files:
                return files, kind
    files = sorted(path.glob("*.parquet"))
    if files:
        return files, _kind(files[0])
    raise FileNotFoundError(f"no exported Parquet dataset under {path} (expected dataset/data/pairs/*.parquet)")


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    mismatch = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(mismatch[0]) if len(mismatch) else n


@dataclass
class Sequences:
    """Every pair as two token sequences: chosen at 2i, rejected at 2i + 1."""

    ids: list[list[int]]
    completion_start: np.ndarray  # first completion token of each sequence
    pair_keys: list[str]  # prompt_id/chosen_id/rejected_id, for caches and logs
    dropped: int  # pairs whose prompt alone fills max_length

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.ids])

    def completion_lengths(self) -> np.ndarray:
        return self.lengths - self.completion_start


def _template(tokenizer, conversations: list[list[dict]], generation_prompt: bool) -> list[list[int]]:
    out = tokenizer.apply_chat_template(conversations, tokenize=True, add_generation_prompt=generation_prompt,
                                        return_dict=True)
    return [list(ids) for ids in out["input_ids"]]


def _messages(value) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in value]


def tokenize_pairs(table: pa.Table, tokenizer, max_length: int) -> Sequences:
    prompts = [_messages(p) for p in table["prompt"].to_pylist()]
    chosen = [_messages(c) for c in table["chosen"].to_pylist()]
    rejected = [_messages(r) for r in table["rejected"].to_pylist()]
    prompt_ids = _template(tokenizer, prompts, True)
    chosen_ids = _template(tokenizer, [p + c for p, c in zip(prompts, chosen)], False)
    rejected_ids = _template(tokenizer, [p + r for p, r in zip(prompts, rejected)], False)
    ids, starts, keys, dropped = [], [], [], 0
    names = zip(table["prompt_id"].to_pylist(), table["chosen_id"].to_pylist(), table["rejected_id"].to_pylist())
    for p, c, r, name in zip(prompt_ids, chosen_ids, rejected_ids, names):
        start = min(common_prefix(p, c), common_prefix(p, r))
        if start >= max_length:
            dropped += 1
            continue
        ids += [c[:max_length], r[:max_length]]
        starts += [start, start]
        keys.append("/".join(name))
    return Sequences(ids, np.array(starts, dtype=np.int64), keys, dropped)


def read_dataset(path: str | Path) -> tuple[pa.Table, str]:
    files, kind = dataset_files(path)
    return pa.concat_tables([pq.read_table(f) for f in files]), kind
