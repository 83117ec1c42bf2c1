"""Preference rows -> token sequences, the way TRL 1.16's DPOTrainer builds them.

Conversational rows: the prompt goes through the chat template with the generation prompt; prompt
+ completion through the template without it; the completion is what follows their common
prefix. Each sequence (prompt + chosen, prompt + rejected) is cut to max_length from the end
(TRL's keep_start); pairs whose prompt alone fills max_length are dropped (no completion left).
Plain-text rows: the tokenizer itself (its BOS), EOS appended to answers that lack it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefsynth.train.formats import TOO_LONG, Rows, canonical, check_one_format
from prefsynth.train.sources import Source, mix, read_source


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
    if not conversations:
        return []
    out = tokenizer.apply_chat_template(conversations, tokenize=True, add_generation_prompt=generation_prompt,
                                        return_dict=True)
    return [list(ids) for ids in out["input_ids"]]


def _text(tokenizer, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []


def _messages(value) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _with_eos(text: str, eos: str) -> str:
    return text if text.endswith(eos) else text + eos  # TRL adds EOS to plain-text answers


def tokenize(rows: Rows, tokenizer, max_length: int) -> Sequences:
    """Pairs (chosen / rejected: one answer each) or lists (chosen / rejected: lists of answers).
    Conversational rows go through the chat template, plain-text rows through the tokenizer itself
    (its own BOS handling) with EOS appended to each answer as TRL does. Rows whose prompt alone
    fills max_length are counted in rows.rejected and left out."""
    table = rows.table
    listwise = rows.kind == "lists"
    chosen, rejected = table["chosen"].to_pylist(), table["rejected"].to_pylist()
    if not listwise:
        chosen, rejected = [[c] for c in chosen], [[r] for r in rejected]
    answers = [c + r for c, r in zip(chosen, rejected)]
    is_chosen = [[True] * len(c) + [False] * len(r) for c, r in zip(chosen, rejected)]
    weights = table["weights"].to_pylist() if "weights" in table.column_names else [None] * table.num_rows
    keys = table["key"].to_pylist()
    if rows.conversational:
        prompts = [_messages(p) for p in table["prompt"].to_pylist()]
        prompt_ids = _template(tokenizer, prompts, True)
        full = _template(tokenizer, [prompts[i] + _messages(a) for i, group in enumerate(answers) for a in group], False)
    else:
        prompts = table["prompt"].to_pylist()
        eos = tokenizer.eos_token or ""
        prompt_ids = _text(tokenizer, prompts)
        full = _text(tokenizer, [prompts[i] + _with_eos(a, eos) for i, group in enumerate(answers) for a in group])
    ids, starts, group, chosen_mask, weight, kept, dropped, at = [], [], [], [], [], [], 0, 0
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
        chosen_mask += is_chosen[i]
        weight += weights[i] if weights[i] is not None else [1.0] * len(sequences)
        kept.append(keys[i])
    if dropped:
        rows.rejected[TOO_LONG] += dropped
    return Sequences(ids, np.array(starts, dtype=np.int64), np.array(group, dtype=np.int64),
                     np.array(chosen_mask, dtype=bool), np.array(weight, dtype=np.float64), kept, dropped)


def load_rows(sources: list[Source], seed: int) -> tuple[Rows, Path | None]:
    """Canonical rows of one or several sources (a seeded, weighted mixture), and the local folder
    the reference log-prob cache goes beside (None: not one local source)."""
    parts, folders = [], []
    for source in sources:
        table, folder = read_source(source)
        parts.append(canonical(table, source.label))
        folders.append(folder)
    if len(sources) == 1 and sources[0].weight == 1:
        return parts[0], folders[0]
    check_one_format(parts, [s.label for s in sources])
    rows = Rows(mix([p.table for p in parts], [s.weight for s in sources], seed), parts[0].kind,
                parts[0].conversational, sum((p.rejected for p in parts), Counter()))
    return rows, folders[0] if len(sources) == 1 else None


def split_rows(rows: Rows, fraction: float, seed: int) -> tuple[Rows, Rows]:
    """A seeded held-out split by prompt: every row of a prompt lands on the same side."""
    prompts = rows.table["prompt_key"]
    unique = pc.unique(prompts)
    held = np.random.default_rng([seed, 7]).random(len(unique)) < fraction
    if len(unique) > 1 and not held.any():
        held[np.random.default_rng([seed, 7]).integers(len(unique))] = True
    is_held = pc.is_in(prompts, value_set=unique.filter(pa.array(held))).to_numpy(zero_copy_only=False)
    train = Rows(rows.table.filter(pa.array(~is_held)), rows.kind, rows.conversational, rows.rejected)
    held_out = Rows(rows.table.filter(pa.array(is_held)), rows.kind, rows.conversational, Counter())
    return train, held_out
