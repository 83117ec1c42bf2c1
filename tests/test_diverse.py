"""Negatively-correlated sampling: one structured-output request per prompt asking for k responses.

The parsing and templating tests need no model; the engine tests run the tiny chat model on
vLLM (CPU) in one module-scoped engine.
"""
import json

import pytest

from prefsynth import langs
from prefsynth.generate.diverse import (
    FALLBACK_NOTE,
    DiverseResult,
    diverse_conversation,
    diverse_samples,
    parse_responses,
    response_schema,
)
from tests.conftest import DEMO

K = 3
# The toy model has never seen JSON: it does not close a string by itself, so responses are
# bounded (maxLength) for it; real models need no bound. 3 x 48 characters fit in 256 tokens even
# for scripts whose characters take several byte-level tokens.
TOY_MAX_CHARS = 48
TOY_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 256}


def _user(text):
    return {"role": "user", "content": text}


def _demo_prompts():
    rows = [json.loads(line) for line in (DEMO.parent / "data" / "demo-prompts.jsonl").read_text().splitlines()]
    return [[_user(r["prompt"])] for r in rows], [r["language"] for r in rows]


@pytest.fixture
def registry_with_gaps(monkeypatch):
    """The registry plus `xx-none` (no templates) and `xx-fb` (English stand-in templates)."""
    records = dict(langs.load())
    en = records["en"]
    records["xx-none"] = en.model_copy(update={"code": "xx-none", "templates": None})
    records["xx-fb"] = en.model_copy(
        update={"code": "xx-fb", "templates": en.templates.model_copy(update={"fallback": True})}
    )
    monkeypatch.setattr(langs, "load", lambda: records)
    return records


# ---- no model -------------------------------------------------------------------------------

def test_parse_accepts_whitespace_strips_and_counts():
    assert parse_responses(' \n{ "responses" : [ " a ", "b\\n",\n"c"] }\n ', 3) == (["a", "b", "c"], None)
    assert parse_responses("", 3) == ([], "empty_response")
    assert parse_responses("  \n", 3) == ([], "empty_response")
    assert parse_responses('{"responses": ["a", "b"', 3) == ([], "invalid_json")  # cut off
    assert parse_responses('["a", "b", "c"]', 3) == ([], "wrong_shape")
    assert parse_responses('{"answers": ["a", "b", "c"]}', 3) == ([], "wrong_shape")
    assert parse_responses('{"responses": ["a", "b"]}', 3) == (["a", "b"], "wrong_count:2")
    assert parse_responses('{"responses": ["a", " ", "c"]}', 3) == (["a", "c"], "empty_items:1")
    assert parse_responses('{"responses": ["a", 2, "c"]}', 3) == (["a", "c"], "empty_items:1")
    # a raw control character inside a string (which a maxLength grammar lets through)
    assert parse_responses('{"responses": ["a\x16b", "c", "d"]}', 3) == (["a\x16b", "c", "d"], None)


def test_schema_fixes_the_count():
    schema = response_schema(4)
    array = schema["properties"]["responses"]
    assert array["minItems"] == array["maxItems"] == 4 and array["items"]["type"] == "string"
    assert schema["required"] == ["responses"] and "maxLength" not in array["items"]
    assert response_schema(2, max_chars=10)["properties"]["responses"]["items"]["maxLength"] == 10


def test_conversation_wraps_the_last_user_message_in_the_language_template():
    messages = [
        {"role": "system", "content": "Sois bref."},
        _user("Bonjour"),
        {"role": "assistant", "content": "Salut !"},
        _user("Comment économiser {un peu} d'argent ?"),
    ]
    conversation, note = diverse_conversation(messages, "fr", 3)
    assert note is None
    assert conversation[:3] == messages[:3]  # system message and history kept
    expected = langs.get("fr").templates.diverse_instruction.replace("{k}", "3").replace(
        "{prompt}", "Comment économiser {un peu} d'argent ?"
    )
    assert conversation[3] == {"role": "user", "content": expected}
    assert "Rédige 3 réponses" in expected and expected.endswith("{un peu} d'argent ?")
    assert messages[3]["content"] == "Comment économiser {un peu} d'argent ?"  # input not modified
    with pytest.raises(ValueError, match="no user message"):
        diverse_conversation([{"role": "system", "content": "x"}], "fr", 3)


def test_language_fallbacks(registry_with_gaps):
    english = langs.get("en").templates.diverse_instruction.replace("{k}", "2").replace("{prompt}", "Hi")
    for language, note in (("xx-none", FALLBACK_NOTE), ("xx-fb", FALLBACK_NOTE), (None, None), ("en", None)):
        conversation, got = diverse_conversation([_user("Hi")], language, 2)
        assert conversation[-1]["content"] == english and got == note, language


def test_sampling_rejects_what_it_sets_itself():
    with pytest.raises(ValueError, match="must not set"):
        diverse_samples(object(), [[_user("a")]], ["en"], 3, {"n": 2, "max_tokens": 8})
    with pytest.raises(ValueError, match="max_tokens"):
        diverse_samples(object(), [[_user("a")]], ["en"], 3, {"temperature": 1.0})
    with pytest.raises(ValueError, match="languages"):
        diverse_samples(object(), [[_user("a")]], [], 3, {"max_tokens": 8})
    assert diverse_samples(object(), [], [], 3, {"max_tokens": 8}) == []


# ---- on the tiny chat model (vLLM, CPU) -----------------------------------------------------

@pytest.fixture
def llm(tiny_chat_llm):
    return tiny_chat_llm


def _check_result(result: DiverseResult, k: int):
    assert isinstance(result, DiverseResult)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.finish_reason in {"stop", "length"}
    assert all(isinstance(t, str) and t and t == t.strip() for t in result.texts)
    if result.parsed:
        assert result.reason is None and len(result.texts) == k
    else:
        assert result.reason and len(result.texts) <= k


@pytest.mark.slow
def test_one_structured_request_per_prompt_yields_k_responses(llm):
    conversations, languages = _demo_prompts()
    results = diverse_samples(llm, conversations, languages, K, TOY_SAMPLING, max_chars=TOY_MAX_CHARS)
    assert len(results) == len(conversations)
    for result in results:
        _check_result(result, K)
        assert result.note is None  # every demo language has in-language templates
    parsed = sum(r.parsed for r in results)
    # The grammar forces the JSON; with bounded strings the toy model closes it (48/48 observed).
    assert parsed >= 0.9 * len(results), [(r.reason, r.finish_reason) for r in results if not r.parsed]


@pytest.mark.slow
def test_engine_run_with_system_message_and_language_fallbacks(llm, registry_with_gaps):
    system = {"role": "system", "content": "You are a helpful assistant."}
    conversations = [[system, _user("How do I make a good cup of black tea?")] for _ in range(4)]
    languages = ["fr", "xx-none", "xx-fb", None]
    results = diverse_samples(llm, conversations, languages, 2, TOY_SAMPLING, max_chars=TOY_MAX_CHARS)
    assert [r.note for r in results] == [None, FALLBACK_NOTE, FALLBACK_NOTE, None]
    for result in results:
        _check_result(result, 2)
    # the three English requests send the same prompt
    assert results[1].prompt_tokens == results[2].prompt_tokens == results[3].prompt_tokens
    assert results[0].prompt_tokens != results[1].prompt_tokens


@pytest.mark.slow
def test_unbounded_strings_are_reported_not_raised(llm):
    # Without maxLength the toy model never ends its first string: cut off at max_tokens.
    conversations, languages = _demo_prompts()
    results = diverse_samples(llm, conversations[:4], languages[:4], K, {"temperature": 1.0, "max_tokens": 32})
    for result in results:
        _check_result(result, K)
        if not result.parsed:
            assert result.finish_reason == "length" and result.reason == "invalid_json"


@pytest.mark.slow
def test_prompt_longer_than_the_context_is_not_sent(llm):
    long_prompt = " ".join(["Please explain in great detail how the water cycle works."] * 80)
    results = diverse_samples(
        llm, [[_user(long_prompt)], [_user("Why is the sky blue?")]], ["en", "en"], K, TOY_SAMPLING,
        max_chars=TOY_MAX_CHARS,
    )
    assert results[0].reason == "prompt_too_long" and not results[0].parsed and results[0].texts == []
    assert results[0].finish_reason == "not_sent" and results[0].prompt_tokens >= 512
    _check_result(results[1], K)
