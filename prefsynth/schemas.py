"""Arrow schemas of every table prefsynth writes: the one place they are defined.

Tables are nouns: prompts, candidates, pairs, rejects. One row per prompt, per candidate, per pair,
per rejected item. Judges add columns to candidates; filters add `keep`/`reason`.
"""
from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

PROMPTS = pa.schema(
    [
        ("prompt_id", pa.string()),  # stable content hash, see prompts.normalize.prompt_id
        ("language", pa.string()),  # registry code (BCP-47), null when unknown
        ("messages", MESSAGES),  # the full conversation sent to generators, system prompt included
        ("source", pa.string()),  # file path or dataset name
        ("source_row", pa.int64()),  # 0-based row (line for JSONL) in the source
        ("source_id", pa.string()),  # the source's own id column, if mapped
        # Translation provenance. Originals: origin=source, source_prompt_id=prompt_id, rest null.
        ("source_prompt_id", pa.string()),  # groups one prompt's versions across languages
        ("origin", pa.string()),  # source | translated
        ("src_language", pa.string()),  # language translated from
        ("src", pa.string()),  # last user message before translation (COMET `src`)
        ("mt", pa.string()),  # its translation (COMET `mt`)
        ("translator", pa.string()),  # model that translated it
    ]
)

CANDIDATES = pa.schema(
    [
        ("candidate_id", pa.string()),  # "{prompt_id}/{generator}/{sample_index}"
        ("prompt_id", pa.string()),
        ("language", pa.string()),
        ("generator", pa.string()),  # generator name in the pipeline config
        ("model", pa.string()),  # model reference as configured (Hub id, path or fixture:NAME)
        ("strategy", pa.string()),  # in_language | translated | diverse
        ("sample_index", pa.int32()),
        ("text", pa.string()),
        ("finish_reason", pa.string()),  # stop | length
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("max_tokens", pa.int32()),
        ("seed", pa.int64()),
        ("seed_scope", pa.string()),  # engine (one seed for the engine) | request (per-prompt seed)
        ("sampling_params", pa.string()),  # JSON of every sampling parameter sent to vLLM
        ("source_text", pa.string()),  # translate_completions: the answer before translation
        ("translator", pa.string()),  # translate_completions: the model that translated it
        ("note", pa.string()),  # e.g. diverse_fallback:<reason>, english_template_fallback
    ]
)

# Columns a filter adds to candidates. keep=False rows stay in the table with their reason.
FILTER_COLUMNS = pa.schema([("keep", pa.bool_()), ("reason", pa.string())])

# Selector output. n_usable: the prompt's usable candidates; pair_index numbers a prompt's pairs
# (RSO emits several).
PAIRS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("chosen_id", pa.string()),
        ("rejected_id", pa.string()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("margin", pa.float64()),
        ("selector", pa.string()),
        ("pair_index", pa.int32()),
        ("n_usable", pa.int32()),
    ]
)

# List-wise selector output (AMPO, MPO): chosen lists best first, rejected lists worst first.
# `weights` (MPO) aligns with chosen_ids followed by rejected_ids; null for unweighted methods.
LISTS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("chosen_ids", pa.list_(pa.string())),
        ("rejected_ids", pa.list_(pa.string())),
        ("chosen_scores", pa.list_(pa.float64())),
        ("rejected_scores", pa.list_(pa.float64())),
        ("weights", pa.list_(pa.float64())),
        ("selector", pa.string()),
        ("n_usable", pa.int32()),
    ]
)

# Prompts a selector could not use, with why.
DROPPED = pa.schema([("prompt_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])

# Where an exported row's prompt came from (copied from PROMPTS).
PROMPT_PROVENANCE = [
    ("source", pa.string()),
    ("source_row", pa.int64()),
    ("source_id", pa.string()),
    ("source_prompt_id", pa.string()),
    ("origin", pa.string()),
]

# The exported dataset: TRL's conversational preference format plus provenance.
DATASET_PAIRS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("language", pa.string()),
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("margin", pa.float64()),
        ("score_column", pa.string()),
        ("selector", pa.string()),
        ("chosen_id", pa.string()),
        ("rejected_id", pa.string()),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("chosen_generator", pa.string()),
        ("rejected_generator", pa.string()),
        ("chosen_strategy", pa.string()),
        ("rejected_strategy", pa.string()),
        ("chosen_sampling_params", pa.string()),
        ("rejected_sampling_params", pa.string()),
        ("chosen_seed", pa.int64()),
        ("rejected_seed", pa.int64()),
        ("chosen_finish_reason", pa.string()),
        ("rejected_finish_reason", pa.string()),
        ("chosen_tokens", pa.int32()),
        ("rejected_tokens", pa.int32()),
        ("prompt_tokens", pa.int32()),
        *PROMPT_PROVENANCE,
    ]
)

# The exported list-wise dataset: one row per prompt, lists of assistant answers.
DATASET_LISTS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("language", pa.string()),
        ("prompt", MESSAGES),
        ("chosen", pa.list_(MESSAGES)),
        ("rejected", pa.list_(MESSAGES)),
        ("chosen_scores", pa.list_(pa.float64())),
        ("rejected_scores", pa.list_(pa.float64())),
        ("weights", pa.list_(pa.float64())),
        ("score_column", pa.string()),
        ("selector", pa.string()),
        ("chosen_ids", pa.list_(pa.string())),
        ("rejected_ids", pa.list_(pa.string())),
        ("chosen_models", pa.list_(pa.string())),
        ("rejected_models", pa.list_(pa.string())),
        ("chosen_strategies", pa.list_(pa.string())),
        ("rejected_strategies", pa.list_(pa.string())),
        ("chosen_tokens", pa.list_(pa.int32())),
        ("rejected_tokens", pa.list_(pa.int32())),
        ("prompt_tokens", pa.int32()),
        *PROMPT_PROVENANCE,
    ]
)

# Eval: one row per (judge, model, prompt, answer index): the model's answer against the baseline's.
# judge_outcome is the judge's alone (1 model wins, 0.5 tie, 0 baseline wins, null judge_error);
# `reason` says why a row is a tie or an error. The wrong-language rule is applied by the
# statistics (eval/stats.py), so changing it needs no new verdicts.
JUDGMENTS = pa.schema(
    [
        ("judge", pa.string()),
        ("judge_type", pa.string()),  # reward_model | llm_judge
        ("model", pa.string()),
        ("baseline", pa.string()),
        ("prompt_id", pa.string()),
        ("language", pa.string()),
        ("prompt", pa.string()),  # the request as the judge sees it
        ("sample_index", pa.int32()),
        ("model_answer", pa.string()),
        ("baseline_answer", pa.string()),
        ("model_tokens", pa.int32()),
        ("baseline_tokens", pa.int32()),
        ("model_chars", pa.int32()),
        ("baseline_chars", pa.int32()),
        ("model_in_language", pa.bool_()),  # null: the prompt has no language, nothing to check
        ("baseline_in_language", pa.bool_()),
        ("model_lid", pa.string()),  # language ID's reason when not in language, e.g. wrong_language:en
        ("baseline_lid", pa.string()),
        ("model_score", pa.float64()),  # reward_model judges
        ("baseline_score", pa.float64()),
        ("verdict_model_first", pa.string()),  # llm_judge: A / B / tie with the model's answer as A
        ("verdict_baseline_first", pa.string()),  # ... with the baseline's answer as A
        ("output_model_first", pa.string()),  # the judge's raw text of each order
        ("output_baseline_first", pa.string()),
        ("judge_outcome", pa.float64()),
        ("position_inconsistent", pa.bool_()),
        ("reason", pa.string()),
    ]
)

REJECTS = pa.schema(
    [
        ("stage", pa.string()),
        ("prompt_id", pa.string()),
        ("candidate_id", pa.string()),
        ("source", pa.string()),
        ("source_row", pa.int64()),
        ("reason", pa.string()),  # short machine-readable reason, e.g. prompt_too_long
        ("detail", pa.string()),  # human-readable detail
    ]
)


def from_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table of `schema` from dicts; missing fields are null."""
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def rejects_table(rows: list[dict]) -> pa.Table:
    return from_rows(rows, REJECTS)
