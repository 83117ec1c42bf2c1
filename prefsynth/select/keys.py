"""Seeded random numbers that depend only on (seed, prompt_id, candidate), never on row order.

A selector that samples (sweet_spot_scalable, rso, the AMPO initialisations, `ties: random`) draws
from counter-based keys: splitmix64 of a hash of the prompt id, the seed, the candidate's rank by
candidate_id within its prompt and a stream number. The same candidates give the same draws in any
row order, in any shard layout, and on any executor, so a Ray run selects exactly what a local run
selects. Everything is vectorised uint64 arithmetic (wrapping is the point, so overflow warnings
are silenced).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_BYTE_MULT = np.uint64(0x100000001B3)  # FNV prime: odd, so powers never vanish mod 2**64


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 with good avalanche."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each string's UTF-8 bytes (polynomial over the bytes, then mixed),
    computed from the Arrow buffers without making Python strings."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    values = values.cast(pa.large_string())
    if values.null_count:
        raise ValueError("cannot hash null ids")
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset: values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if values.buffers()[2] is not None else np.zeros(0, np.uint8)
    start, end = offsets[:-1], offsets[1:]
    lengths = (end - start).astype(np.int64)
    out = np.zeros(len(values), dtype=np.uint64)
    filled = lengths > 0
    if filled.any():
        chunk = data[start[0]: end[-1]].astype(np.uint64)
        position = np.arange(len(chunk)) - np.repeat(start - start[0], lengths)
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(int(lengths.max()), _BYTE_MULT, dtype=np.uint64))
            terms = (chunk + np.uint64(1)) * powers[position]
            out[filled] = np.add.reduceat(terms, (start - start[0])[filled])  # wraps mod 2**64, as intended
    return mix64(out ^ lengths.astype(np.uint64))


def prompt_keys(prompt_hash: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """One uint64 per prompt: a function of (seed, stream, prompt)."""
    seed_key = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ mix64(np.uint64(stream)))
    return mix64(prompt_hash ^ seed_key)


def candidate_keys(prompt_key: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """One uint64 per candidate from its prompt's key and the rank of its candidate_id."""
    with np.errstate(over="ignore"):
        return mix64(prompt_key + np.asarray(id_rank, dtype=np.uint64) * _GOLDEN)


def uniform(keys: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from uint64 keys (the top 53 bits)."""
    return (keys >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
