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
    """Every answer as one token sequence (prompt + answer), grouped by pair or list: a pair is
    chosen at 2i, rejected at 2i + 1; a list's chosen answers come first."""

    ids: list[list[int]]
    completion_start: np.ndarray  # first completion token of each sequence
    group: np.ndarray  # the pair / list each sequence belongs to
    chosen: np.ndarray  # bool: a chosen answer
    weight: np.ndarray  # list-wise weight (1 when the data has none)
    keys: list[str]  # one per group: prompt_id + answer ids, for caches and logs
    dropped: int  # groups whose prompt alone fills max_length

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.ids])

    def completion_lengths(self) -> np.ndarray:
        return self.lengths - self.completion_start

    @property
    def groups(self) -> int:
        return len(self.keys)

    def rows_of(self, groups: np.ndarray) -> np.ndarray:
        """Sequence rows of some groups, group by group (chosen before rejected)."""
        starts = np.searchsorted(self.group, groups, side="left")
        ends = np.searchsorted(self.group, groups, side="right")
        return np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(groups) else np.zeros(0, int)


def _template(tokenizer, conversations: list[list[dict]], generation_prompt: bool) -> list[list[int]]:
    out = tokenizer.apply_chat_template(conversations, tokenize=True, add_generation_prompt=generation_prompt,
                                        return_dict=True)
    return [list(ids) for ids in out["input_ids"]]


def _messages(value) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in value]


def tokenize(table: pa.Table, tokenizer, max_length: int) -> Sequences:
    """Pairs (chosen / rejected: one answer each) or lists (chosen / rejected: lists of answers)."""
    listwise = "chosen_ids" in table.column_names
    prompts = [_messages(p) for p in table["prompt"].to_pylist()]
    if listwise:
        answers = [[_messages(a) for a in c] + [_messages(a) for a in r]
                   for c, r in zip(table["chosen"].to_pylist(), table["rejected"].to_pylist())]
        is_chosen = [[True] * len(c) + [False] * len(r) for c, r in zip(table["chosen"].to_pylist(), table["rejected"].to_pylist())]
        weights = table["weights"].to_pylist() if "weights" in table.column_names else [None] * table.num_rows
        keys = [f"{p}/{'/'.join(c + r)}" for p, c, r in zip(
            table["prompt_id"].to_pylist(), table["chosen_ids"].to_pylist(), table["rejected_ids"].to_pylist())]
    else:
        answers = [[_messages(c), _messages(r)] for c, r in zip(table["chosen"].to_pylist(), table["rejected"].to_pylist())]
        is_chosen = [[True, False]] * table.num_rows
        weights = [None] * table.num_rows
        keys = ["/".join(k) for k in zip(table["prompt_id"].to_pylist(), table["chosen_id"].to_pylist(),
                                          table["rejected_id"].to_pylist())]
    prompt_ids = _template(tokenizer, prompts, True)
    full = _template(tokenizer, [prompts[i] + a for i, group in enumerate(answers) for a in group], False)
    ids, starts, group, chosen, weight, kept, dropped, at = [], [], [], [], [], [], 0, 0
    for i, answer_list in enumerate(answers):
        sequences = full[at: at + len(answer_list)]
        at += len(answer_list)
        start = min(common_prefix(prompt_ids[i], seq) for seq in sequences)
        if start >= max_length:
            dropped += 1
            continue
        ids += [seq[:max_length] for seq in sequences]
        starts += [start] * len(sequences)
        group += [len(kept)] * len(sequences)
        chosen += is_chosen[i]
        weight += weights[i] if weights[i] is not None else [1.0] * len(sequences)
        kept.append(keys[i])
    return Sequences(ids, np.array(starts, dtype=np.int64), np.array(group, dtype=np.int64), np.array(chosen, dtype=bool),
                     np.array(weight, dtype=np.float64), kept, dropped)


def read_dataset(path: str | Path) -> tuple[pa.Table, str]:
    files, kind = dataset_files(path)
    return pa.concat_tables([pq.read_table(f) for f in files]), kind
