"""The translate stage: source-language prompts -> the same prompts in each target language.

Every message of a prompt is translated (system, user and earlier assistant turns), with code,
URLs, placeholders and markup protected (protect.py). A translated prompt keeps
`source_prompt_id` (its original), `src`/`mt` (last user message before and after, for COMET) and
`translator`. A translation that lost a protected span, came back empty, or is not in the target
language per language ID is rejected with the reason; the original prompt stays.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from prefsynth import langid, langs, schemas
from prefsynth.config import Translate
from prefsynth.engine import make_llm, request_seed
from prefsynth.stages import Op, ShardInput, ShardOutput
from prefsynth.translate.protect import LostSpan, protect, restore

STAGE = "translate"


class VllmTranslator:
    """An instruction model prompted with the target language's translation template."""

    def __init__(self, llm: Any, max_tokens: int, temperature: float):
        self.llm, self.max_tokens, self.temperature = llm, max_tokens, temperature

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        from vllm import SamplingParams

        template = langs.get(target).templates.translation_instruction
        name = langs.get(source).native_name
        conversations = [[{"role": "user", "content": template.format(source_language=name, text=t)}] for t in texts]
        if self.temperature == 0:  # greedy needs no seed
            params = SamplingParams(temperature=0.0, max_tokens=self.max_tokens)
        else:  # seeded by the text and languages: the same translation on any executor or batch
            params = [SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens,
                                     seed=request_seed(0, f"{source}>{target}:{t}")) for t in texts]
        return [out.outputs[0].text.strip() for out in self.llm.chat(conversations, params, use_tqdm=False)]


def load_translator(config) -> Any:
    """A translator for a `Translator` config (vLLM engine or seq2seq model), loaded once."""
    if config.backend == "seq2seq":
        return Seq2SeqBackend(config)
    return VllmTranslator(make_llm(config.model, config.engine, seed=0), config.max_tokens, config.temperature)


class Seq2SeqBackend:
    """An NLLB/M2M100-family model; registry codes map to its FLORES-200 codes."""

    def __init__(self, config):
        from prefsynth.translate.seq2seq import Seq2SeqTranslator

        self.model = Seq2SeqTranslator(
            config.model, device=config.device, dtype=config.engine.dtype, num_beams=config.num_beams,
            max_new_tokens=config.max_tokens,
        )
        self.batch_size = config.batch_size

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        return self.model.translate(texts, langs.get(source).nllb, langs.get(target).nllb, self.batch_size)


def translate_protected(translator: Any, texts: list[str], source: str, target: str) -> list[tuple[str | None, str | None]]:
    """(translation, None) or (None, reason) per text."""
    masked, spans = zip(*(protect(text) for text in texts)) if texts else ((), ())
    outputs = translator.translate(list(masked), source, target) if texts else []
    results: list[tuple[str | None, str | None]] = []
    for output, kept in zip(outputs, spans):
        if not output.strip():
            results.append((None, "empty_translation"))
            continue
        try:
            results.append((restore(output, kept), None))
        except LostSpan as error:
            results.append((None, f"translation_lost_protected_span: {error}"))
    return results


def translated_prompt_id(language: str, messages: list[dict], source_prompt_id: str) -> str:
    # Salted with the original's id: a translation never collides with a prompt from the sources.
    key = json.dumps([language, messages, source_prompt_id], ensure_ascii=False)
    return "t" + hashlib.sha256(key.encode()).hexdigest()[:15]


class TranslatePrompts(Op):
    uses_model = True

    def __init__(self, config: Translate):
        self.translate = config

    def config(self) -> dict:
        return {"translate": self.translate.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "TranslatePrompts":
        return cls(Translate.model_validate(config["translate"]))

    def load(self) -> Any:
        return load_translator(self.translate)

    def translator_name(self, target: str) -> str:
        templates = langs.get(target).templates
        fallback = self.translate.backend == "vllm" and (templates is None or templates.fallback)
        return self.translate.model + (" [english template]" if fallback else "")

    def process(self, translator: Any, shard: ShardInput) -> ShardOutput:
        cfg = self.translate
        prompts = shard.prompts
        rows = prompts.to_pylist()
        originals = [row for row in rows if row["language"] == cfg.source_language]
        # One batch per target: every message of every source prompt.
        flat = [(i, j, message["content"]) for i, row in enumerate(originals) for j, message in enumerate(row["messages"])]
        out_rows = list(rows) if cfg.keep_source else [r for r in rows if r["language"] != cfg.source_language]
        rejects = []
        for target in cfg.targets:
            results = translate_protected(translator, [text for _, _, text in flat], cfg.source_language, target)
            translated: dict[int, list] = {}
            failed: dict[int, str] = {}
            for (i, j, _), (text, reason) in zip(flat, results):
                if reason is not None:
                    failed.setdefault(i, reason)
                translated.setdefault(i, [None] * len(originals[i]["messages"]))[j] = text
            candidates = []
            for i, original in enumerate(originals):
                if i in failed:
                    rejects.append({"stage": STAGE, "prompt_id": original["prompt_id"], "reason": failed[i].split(":")[0],
                                    "detail": f"-> {target}: {failed[i]}"})
                    continue
                messages = [dict(m, content=t) for m, t in zip(original["messages"], translated[i])]
                candidates.append((original, messages))
            detected = np.full(len(candidates), target, dtype=object)
            if cfg.check_language and langs.get(target).fasttext and candidates:
                last_user = [next(m["content"] for m in reversed(ms) if m["role"] == "user") for _, ms in candidates]
                found = langid.identify(last_user)
                detected = np.where(found.too_short, target, found.language)
            for (original, messages), language in zip(candidates, detected):
                if language != target:
                    rejects.append({"stage": STAGE, "prompt_id": original["prompt_id"], "reason": "translation_wrong_language",
                                    "detail": f"-> {target}: language ID says {language}"})
                    continue
                src = next(m["content"] for m in reversed(original["messages"]) if m["role"] == "user")
                mt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                out_rows.append(dict(
                    original, prompt_id=translated_prompt_id(target, messages, original["source_prompt_id"]),
                    language=target, messages=messages, origin="translated", src_language=cfg.source_language,
                    src=src, mt=mt, translator=self.translator_name(target),
                ))
        return ShardOutput(schemas.from_rows(out_rows, schemas.PROMPTS), schemas.rejects_table(rejects),
                           {"translated": len(out_rows) - len(rows)})
