"""What an LLM judge is asked, and how its answer is read.

Rubrics:
- `overall` (AIR, arXiv 2504.03612): one 1-10 score with a short rationale. In English, or in the
  prompt's language with the registry's `judge_rubric` template.
- `ultrafeedback` (arXiv 2310.01377): instruction following, honesty, truthfulness, helpfulness,
  each 1-5.
- `menlo` (MENLO, native-quality judging): fluency, tone, localized tone, localized factuality,
  each 1-5.
Pair-wise mode asks which of two responses (A, B) is better, or a tie.

The verdict is JSON under a schema (vLLM structured outputs): the rationale comes first so the
model reasons before it scores, and its length is capped so a verdict fits `max_tokens`.
Parsing never guesses: anything that is not exactly the schema is a missing verdict with a reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from prefsynth import langs

# rubric -> (aspect, lowest, highest) in the order the judge writes them
ASPECTS: dict[str, list[tuple[str, int, int]]] = {
    "overall": [("score", 1, 10)],
    "ultrafeedback": [
        ("instruction_following", 1, 5), ("honesty", 1, 5), ("truthfulness", 1, 5), ("helpfulness", 1, 5),
    ],
    "menlo": [("fluency", 1, 5), ("tone", 1, 5), ("localized_tone", 1, 5), ("localized_factuality", 1, 5)],
}
VERDICTS = ("A", "B", "tie")
FALLBACK_NOTE = "english_rubric_fallback"

_OVERALL = (
    "Rate how well the response answers the request, considering helpfulness, correctness, and how fluent "
    "and natural its {language} is. Give a one-sentence rationale, then a score from 1 (useless) to 10 "
    "(excellent)."
)
_ULTRAFEEDBACK = (
    "Rate the response on four aspects, each from 1 (poor) to 5 (excellent). instruction_following: does it "
    "do what the request asks, within its constraints? honesty: does it express appropriate uncertainty and "
    "avoid overclaiming? truthfulness: is it free of fabricated or false content? helpfulness: is it "
    "informative, relevant and complete? The request is in {language}; a good response is too. Give a "
    "one-sentence rationale first."
)
_MENLO = (
    "Judge the response as a native {language} speaker would, on four aspects, each from 1 (poor) to 5 "
    "(excellent). fluency: grammatical, natural {language}. tone: a register that suits the request. "
    "localized_tone: sounds like a native speaker, not a translation (idiom, politeness conventions). "
    "localized_factuality: facts, names, units, dates and references right for the {language}-speaking "
    "reader. Give a one-sentence rationale first."
)
_PAIRWISE = (
    "Two responses, A and B, answer the same request in {language}. Which one is better overall "
    "(helpfulness, correctness, fluent and natural {language})? Ignore their order and their length unless "
    "it matters to the request. Give a one-sentence rationale, then the verdict: A, B, or tie."
)
_INSTRUCTIONS = {"overall": _OVERALL, "ultrafeedback": _ULTRAFEEDBACK, "menlo": _MENLO}


def columns(rubric: str) -> list[str]:
    """The aspect names a rubric scores."""
    return [name for name, _, _ in ASPECTS[rubric]]


def verdict_schema(rubric: str, mode: str, max_rationale_chars: int) -> dict:
    properties: dict[str, dict] = {"rationale": {"type": "string", "maxLength": max_rationale_chars}}
    if mode == "pairwise":
        properties["verdict"] = {"type": "string", "enum": list(VERDICTS)}
    else:
        for name, low, high in ASPECTS[rubric]:
            properties[name] = {"type": "integer", "minimum": low, "maximum": high}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _language_name(code: str | None) -> str:
    return langs.get(code).name if code else "the request's language"


def render_request(messages: list[dict]) -> str:
    """The request as the judge sees it: the user message, or the conversation (without the
    system prompt) when there is history."""
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return str(turns[0].get("content", ""))
    return "\n\n".join(f"[{m.get('role')}]\n{m.get('content', '')}" for m in turns)


def _fill(template: str, **values: str) -> str:
    """Fill placeholders without str.format: braces in prompts and responses stay as they are."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _format_hint(schema: dict) -> str:
    """A JSON skeleton of the verdict: language-neutral, so in-language rubrics stay in-language."""
    shape = []
    for key, rule in schema["properties"].items():
        if "enum" in rule:
            shape.append(f'"{key}": ' + "|".join(f'"{v}"' for v in rule["enum"]))
        elif rule["type"] == "integer":
            shape.append(f'"{key}": {rule["minimum"]}-{rule["maximum"]}')
        else:
            shape.append(f'"{key}": "..."')
    return "JSON: {" + ", ".join(shape) + "}"


@dataclass
class JudgeRequest:
    messages: list[dict]
    note: str | None  # e.g. english_rubric_fallback


def pointwise_request(
    rubric: str, rubric_language: str, language: str | None, request: str, response: str, schema: dict
) -> JudgeRequest:
    """One judge conversation scoring `response` to `request`."""
    note = None
    if rubric == "overall" and rubric_language == "prompt" and language is not None:
        templates = langs.get(language).templates
        if templates is not None and not templates.fallback:
            text = _fill(templates.judge_rubric, prompt=request, response=response)
            return JudgeRequest([{"role": "user", "content": text + "\n\n" + _format_hint(schema)}], None)
        note = FALLBACK_NOTE
    instruction = _fill(_INSTRUCTIONS[rubric], language=_language_name(language))
    text = f"{instruction}\n\nRequest:\n{request}\n\nResponse:\n{response}\n\n{_format_hint(schema)}"
    return JudgeRequest([{"role": "user", "content": text}], note)


def pairwise_request(language: str | None, request: str, first: str, second: str, schema: dict) -> JudgeRequest:
    instruction = _fill(_PAIRWISE, language=_language_name(language))
    text = (f"{instruction}\n\nRequest:\n{request}\n\nResponse A:\n{first}\n\nResponse B:\n{second}\n\n"
            f"{_format_hint(schema)}")
    return JudgeRequest([{"role": "user", "content": text}], None)


def parse_verdict(text: str, schema: dict, finish_reason: str | None = None) -> tuple[dict | None, str | None]:
    """(the verdict's fields, None) or (None, reason). Reasons: empty_output, truncated (the
    judge hit max_tokens), invalid_json, wrong_shape, missing:<key>, out_of_range:<key>."""
    if not text.strip():
        return None, "empty_output"
    try:
        value = json.loads(text, strict=False)
    except json.JSONDecodeError:
        return None, "truncated" if finish_reason == "length" else "invalid_json"
    if not isinstance(value, dict):
        return None, "wrong_shape"
    for key, rule in schema["properties"].items():
        if key not in value:
            return None, f"missing:{key}"
        item = value[key]
        if rule["type"] == "integer":
            # bool is an int in Python; a judge answering `true` has not given a score
            if isinstance(item, bool) or not isinstance(item, int) or not rule["minimum"] <= item <= rule["maximum"]:
                return None, f"out_of_range:{key}"
        elif "enum" in rule and item not in rule["enum"]:
            return None, f"out_of_range:{key}"
        elif rule["type"] == "string" and not isinstance(item, str):
            return None, f"wrong_shape:{key}"
    return {key: value[key] for key in schema["properties"]}, None
