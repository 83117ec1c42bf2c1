"""Decontamination: eval prompts that share an n-gram with a training prompt are left out.

Text is normalised for the whole batch with pyarrow's RE2 kernels (lower case, punctuation and
symbols to spaces, every character of a script written without spaces - Han, kana, Thai, Lao,
Khmer, Myanmar, Tibetan - made a token of its own), split on whitespace, and each window of
`n` consecutive tokens is hashed to 64 bits in numpy (n vectorised multiply-adds over all
windows at once). A text shorter than n tokens contributes one hash of all its tokens, so it
matches a training text that is the same after normalisation. Matching is a sorted-array
lookup: no per-pair Python.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefsynth import schemas
from prefsynth.eval.config import Decontaminate
from prefsynth.stages import Op, ShardInput, ShardOutput

_UNSPACED = r"([\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}])"
_PRIME = np.uint64(1099511628211)


def tokens(texts: pa.Array) -> pa.ListArray:
    text = pc.utf8_lower(pc.fill_null(texts, ""))
    text = pc.replace_substring_regex(text, r"[\p{P}\p{S}]+", " ")
    text = pc.replace_substring_regex(text, _UNSPACED, r" \1 ")
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))


def ngram_hashes(texts: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, row of each hash) of every n-gram of every text (one whole-text hash for texts
    shorter than n tokens; none for empty ones)."""
    split = tokens(pa.array(texts, pa.string()) if not isinstance(texts, (pa.Array, pa.ChunkedArray)) else texts)
    split = split.combine_chunks() if isinstance(split, pa.ChunkedArray) else split
    offsets = split.offsets.to_numpy().astype(np.int64)
    # hash each distinct token once, then spread by its dictionary index (values, not the
    # per-call dictionary order, decide the hash, so training and eval hashes agree)
    encoded = pc.dictionary_encode(split.flatten())
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    token_hash = (pd.util.hash_array(distinct)[encoded.indices.to_numpy()] if len(encoded)
                  else np.zeros(0, np.uint64))
    flat = encoded
    lengths = np.diff(offsets)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.arange(len(flat))
    ends = np.repeat(offsets[1:], lengths)
    windows = starts[starts + n <= ends]
    full = np.zeros(len(windows), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            full = full * _PRIME + token_hash[windows + j]
        short_rows = np.flatnonzero((lengths > 0) & (lengths < n))
        short = lengths[short_rows].astype(np.uint64)  # the length first: 'a b' and 'a b c' differ
        for j in range(n - 1):
            present = j < lengths[short_rows]
            position = np.minimum(offsets[short_rows] + j, max(len(flat) - 1, 0))
            step = short * _PRIME + (token_hash[position] if len(flat) else 0)
            short = np.where(present, step, short)
    return np.concatenate([full, short]), np.concatenate([rows[starts + n <= ends], short_rows])


def prompt_texts(messages: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The user-visible request of each conversation: its non-system turns joined by newlines."""
    lists = pa.chunked_array([messages] if isinstance(messages, pa.Array) else messages.chunks, schemas.MESSAGES)
    lists = lists.combine_chunks() if lists.num_chunks else pa.array([], schemas.MESSAGES)
    flat = lists.flatten()
    row = np.repeat(np.arange(len(lists)), np.diff(lists.offsets.to_numpy()))
    keep = pc.fill_null(pc.not_equal(flat.field("role"), "system"), True).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(row[keep], minlength=len(lists)))]).astype(np.int32)
    contents = pc.fill_null(flat.field("content").filter(pa.array(keep)), "")
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), contents), "\n")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "manifest.json").is_file():  # a run directory: its dataset, else its prompt set
        dataset = path / "dataset" / "data"
        return _files(dataset) if dataset.is_dir() else sorted((path / "prompts").glob("shard-*.parquet"))
    if (path / "data").is_dir():
        return _files(path / "data")
    found = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json") and not
                   any(part.startswith(("_", ".")) for part in p.relative_to(path).parts))
    if not found:
        raise ValueError(f"decontaminate: {path} holds no Parquet or JSONL files")
    return found


def _read(file: Path) -> pa.Table:
    if file.suffix == ".parquet":
        return pq.read_table(file)
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pa.Table.from_pylist(rows)


def training_prompts(paths: list[str]) -> tuple[pa.Array, list[str]]:
    """(texts, ids) of every training prompt in `paths` (ids: the prompt_id or id column, else
    FILE:ROW)."""
    texts, ids = [], []
    for path in paths:
        for file in _files(Path(path)):
            table = _read(file)
            column = next((name for name in ("prompt", "messages") if name in table.column_names), None)
            if column is None:
                raise ValueError(f"decontaminate: {file} has no `prompt` or `messages` column; has {table.column_names}")
            values = table[column]
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                texts.append(values.cast(pa.string()))
            else:
                texts.append(prompt_texts(values.cast(schemas.MESSAGES)))
            key = next((name for name in ("prompt_id", "id") if name in table.column_names), None)
            ids += (table[key].cast(pa.string()).to_pylist() if key else [f"{file}:{row}" for row in range(table.num_rows)])
    return pa.concat_arrays([pa.array(t) if isinstance(t, pa.Array) else t.combine_chunks() for t in texts]) if texts \
        else pa.array([], pa.string()), ids


class TrainingIndex:
    """Sorted n-gram hashes of the training prompts, each with the id of a prompt holding it."""

    def __init__(self, paths: list[str], n: int):
        texts, self.ids = training_prompts(paths)
        hashes, rows = ngram_hashes(texts, n)
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.rows, self.n = hashes[order], rows[order], n

    def matches(self, texts: pa.Array) -> list[str | None]:
        """For each text, the id of a training prompt it shares an n-gram with, or None."""
        hashes, rows = ngram_hashes(texts, self.n)
        found = np.full(len(texts), -1, dtype=np.int64)
        if len(self.hashes) and len(hashes):
            at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
            hit = self.hashes[at] == hashes
            # the first hit of each text (rows ascend within a text's hashes in any order: take any)
            found[rows[hit][::-1]] = self.rows[at[hit]][::-1]
        return [self.ids[i] if i >= 0 else None for i in found]


class DecontaminatePrompts(Op):
    """The `decontaminate` stage: the prompt set without prompts found in the training data."""

    def __init__(self, config: Decontaminate, fingerprints: dict[str, str]):
        self.decontaminate, self.fingerprints = config, fingerprints
        self._index: TrainingIndex | None = None

    def config(self) -> dict:
        # the training data's fingerprints make the stage recompute when that data changes
        return {"decontaminate": self.decontaminate.model_dump(mode="json"), "fingerprints": self.fingerprints}

    @classmethod
    def from_config(cls, config: dict) -> "DecontaminatePrompts":
        return cls(Decontaminate.model_validate(config["decontaminate"]), config["fingerprints"])

    def warm_up(self) -> None:
        if self._index is None:
            self._index = TrainingIndex(self.decontaminate.against, self.decontaminate.ngram)

    def process(self, resource: Any, shard: ShardInput) -> ShardOutput:
        self.warm_up()
        prompts = shard.prompts
        found = self._index.matches(prompt_texts(prompts["messages"]))
        contaminated = np.array([match is not None for match in found], dtype=bool)
        ids = prompts["prompt_id"].to_pylist()
        rejects = schemas.rejects_table([
            {"stage": "decontaminate", "prompt_id": ids[i], "reason": "contaminated",
             "detail": f"shares a {self.decontaminate.ngram}-gram with training prompt {found[i]}"}
            for i in np.flatnonzero(contaminated)])
        return ShardOutput(prompts.filter(pa.array(~contaminated)), rejects)


def fingerprints(paths: list[str]) -> dict[str, str]:
    """Size and modification time of every training file (cheap; a changed file changes the hash)."""
    out = {}
    for path in paths:
        for file in _files(Path(path)):
            stat = file.stat()
            out[str(file)] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return out
