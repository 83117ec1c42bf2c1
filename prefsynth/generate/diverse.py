"""Negatively-correlated sampling (Community Alignment): one request asks for k responses that differ.

Instead of drawing k independent samples (which from one model tend to agree in values, stance and
style), a single request asks the model for k responses that deliberately differ from one another,
written in the prompt's language (the registry's `diverse_instruction` template). The request is
constrained with vLLM structured outputs to a JSON object `{"responses": [k strings]}`, so the k
responses parse reliably. Where parsing still fails (cut off at `max_tokens`, empty strings, ...)
the result says why, and the caller falls back to plain sampling.

The schema is sent as compact JSON: xgrammar (vLLM's default structured-output backend) converts
it to a grammar without optional whitespace. With `json=schema` vLLM allows any whitespace
between tokens (an engine-wide setting, `disable_any_whitespace`), and a weak model can spend its
whole token budget on newlines before the first response (observed with the toy model: every
request hit max_tokens). `compact_json=False` sends `json=schema` as is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from prefsynth import langs
from prefsynth.engine import structured_outputs

FALLBACK_NOTE = "english_template_fallback"
FALLBACK_LANGUAGE = "en"
# sampling keys that this module sets itself
_RESERVED = ("n", "seed", "structured_outputs", "guided_decoding")


@dataclass
class DiverseResult:
    """The outcome of one diverse request (one prompt).

    texts: the stripped, non-empty responses (k when parsed, possibly fewer otherwise).
    parsed: True when the answer was valid JSON with exactly k non-empty responses.
    reason: why it was not parsed (invalid_json, empty_response, wrong_shape, wrong_count:N,
        empty_items:N, prompt_too_long); None when parsed.
    note: english_template_fallback when the language has no in-language template.
    finish_reason: vLLM's (stop, length, ...), or "not_sent" when the request was not sent.
    """

    texts: list[str] = field(default_factory=list)
    parsed: bool = False
    reason: str | None = None
    note: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


def response_schema(k: int, max_chars: int | None = None) -> dict:
    """JSON schema of the answer: exactly k non-empty strings under "responses".

    max_chars bounds each response (maxLength). Note that xgrammar then allows no escape
    sequences in the strings (so no line breaks): use it for short answers or weak models only.
    """
    item: dict[str, Any] = {"type": "string", "minLength": 1}
    if max_chars is not None:
        item["maxLength"] = max_chars
    return {
        "type": "object",
        "properties": {"responses": {"type": "array", "items": item, "minItems": k, "maxItems": k}},
        "required": ["responses"],
        "additionalProperties": False,
    }


def instruction_template(language: str | None) -> tuple[str, str | None]:
    """The diverse-sampling template for `language` and a note when the English one stands in.

    None (language unknown) uses English without a note; a registry language without templates,
    or whose templates are English stand-ins (`fallback: true`), uses English with a note.
    """
    if language is None:
        return langs.get(FALLBACK_LANGUAGE).templates.diverse_instruction, None
    templates = langs.get(language).templates
    if templates is None or templates.fallback:
        return langs.get(FALLBACK_LANGUAGE).templates.diverse_instruction, FALLBACK_NOTE
    return templates.diverse_instruction, None


def fill(template: str, k: int, prompt: str) -> str:
    """Fill {k} and {prompt}; braces inside the prompt are left alone (no str.format on it)."""
    return template.replace("{k}", str(k)).replace("{prompt}", prompt)


def diverse_conversation(messages: list[dict], language: str | None, k: int) -> tuple[list[dict], str | None]:
    """The conversation to send: the last user message wrapped in the instruction, the rest kept."""
    template, note = instruction_template(language)
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if last_user is None:
        raise ValueError("conversation has no user message to wrap")
    content = messages[last_user].get("content")
    if not isinstance(content, str):
        raise ValueError(f"user message content must be a string, got {type(content).__name__}")
    conversation = [dict(m) for m in messages]
    conversation[last_user]["content"] = fill(template, k, content)
    return conversation, note


def parse_responses(text: str, k: int) -> tuple[list[str], str | None]:
    """(stripped non-empty responses, reason or None when exactly k were found)."""
    if not text.strip():
        return [], "empty_response"
    try:
        # accepts surrounding whitespace; strict=False: raw control characters inside strings
        # (which the maxLength grammar lets through) are kept rather than failing the parse
        value = json.loads(text, strict=False)
    except json.JSONDecodeError:
        return [], "invalid_json"
    if not isinstance(value, dict) or not isinstance(value.get("responses"), list):
        return [], "wrong_shape"
    items = value["responses"]
    texts = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if len(items) != k:
        return texts, f"wrong_count:{len(items)}"
    if len(texts) < k:
        return texts, f"empty_items:{k - len(texts)}"  # non-strings or blank strings dropped
    return texts, None


def _check_sampling(sampling: dict) -> None:
    reserved = [key for key in _RESERVED if key in sampling]
    if reserved:
        raise ValueError(f"sampling must not set {reserved}: diverse sampling sets them")
    if "max_tokens" not in sampling:
        raise ValueError("sampling needs max_tokens (for the whole JSON answer, all k responses)")


def sampling_params(k: int, sampling: dict, *, max_chars: int | None = None, compact_json: bool = True,
                    seed: int | None = None) -> Any:
    from vllm import SamplingParams

    _check_sampling(sampling)
    return SamplingParams(
        n=1, seed=seed, **sampling, structured_outputs=structured_outputs(response_schema(k, max_chars), compact_json),
    )


def diverse_samples(
    llm: Any,
    conversations: list[list[dict]],
    languages: list[str | None],
    k: int,
    sampling: dict,
    *,
    max_chars: int | None = None,
    compact_json: bool = True,
    seeds: list[int] | None = None,
) -> list[DiverseResult]:
    """One structured-output request per conversation asking for k mutually different responses.

    `sampling` holds temperature / top_p / max_tokens (max_tokens bounds the whole JSON answer)
    and any other SamplingParams field except n and seed; `seeds` (one per conversation) seeds each request.
    `max_chars` bounds each response (see `response_schema`); `compact_json` see the module
    docstring. All requests go to `llm.chat` in one batch.
    Prompts whose wrapped conversation does not fit the model's context are not sent
    (reason prompt_too_long). Results are in the order of `conversations`.
    """
    if len(conversations) != len(languages):
        raise ValueError(f"{len(conversations)} conversations but {len(languages)} languages")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not conversations:
        return []
    _check_sampling(sampling)
    from prefsynth.engine import generate_from_ids, max_model_len
    from prefsynth.generate.vllm_generate import chat_token_ids

    wrapped = [diverse_conversation(c, lang, k) for c, lang in zip(conversations, languages)]
    results = [DiverseResult(note=note) for _, note in wrapped]
    limit = max_model_len(llm)
    token_ids = chat_token_ids(llm.get_tokenizer(), [c for c, _ in wrapped], add_generation_prompt=True)
    sent = [i for i, ids in enumerate(token_ids) if len(ids) < limit]  # at least one token of room to answer
    for i, ids in enumerate(token_ids):
        if len(ids) >= limit:
            results[i].reason, results[i].prompt_tokens, results[i].finish_reason = "prompt_too_long", len(ids), "not_sent"
    params = (sampling_params(k, sampling, max_chars=max_chars, compact_json=compact_json) if seeds is None else
              [sampling_params(k, sampling, max_chars=max_chars, compact_json=compact_json, seed=seeds[i]) for i in sent])
    outputs = generate_from_ids(llm, [token_ids[i] for i in sent], params)
    for i, request in zip(sent, outputs):
        sample = request.outputs[0]
        result = results[i]
        result.texts, result.reason = parse_responses(sample.text, k)
        result.parsed = result.reason is None
        result.prompt_tokens = len(request.prompt_token_ids or [])
        result.completion_tokens = len(sample.token_ids)
        result.finish_reason = str(sample.finish_reason)
    return results
