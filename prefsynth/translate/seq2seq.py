"""Translation with an NLLB-style encoder-decoder (facebook/nllb-200-*, or `fixture:tiny-mt`) through
transformers, used the way NLLB is meant to be: the tokenizer's `src_lang` prefixes the source with
its language code, and the target code is forced as the first generated token.
"""
from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Seq2SeqTranslator:
    def __init__(
        self, model: str, *, device: str = "auto", dtype: str = "auto", num_beams: int = 1, max_new_tokens: int = 256
    ):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from prefsynth.models import materialize

        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto' or one of {sorted(_DTYPES)}")
        path = materialize(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        # bf16 halves memory and time on GPUs; many CPUs lack fast bf16 matmuls, so they keep float32.
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self._language_codes = frozenset(self.tokenizer.extra_special_tokens)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=_DTYPES[dtype]).to(self.device).eval()
        # NLLB's generation config sets max_length=200; max_new_tokens is our only length limit
        # (and transformers warns about every call when both are set).
        self.model.generation_config.max_length = None
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens

    def _language_id(self, code: str) -> int:
        # convert_tokens_to_ids maps an unknown code silently to <unk>, or to an ordinary subword
        # ("a"): accept only the tokenizer's language-code tokens (FLORES-200 codes for NLLB).
        if code not in self._language_codes:
            raise ValueError(f"language code {code!r} is not a language token of this model")
        return self.tokenizer.convert_tokens_to_ids(code)

    def translate(self, texts: list[str], source_nllb: str, target_nllb: str, batch_size: int = 16) -> list[str]:
        """Translations of `texts`, in input order; empty (or blank) texts give ""."""
        self._language_id(source_nllb)
        target_id = self._language_id(target_nllb)
        self.tokenizer.src_lang = source_nllb
        results = [""] * len(texts)
        # Longest first, in batches of similar length: less padding, and an out-of-memory error
        # shows up on the first batch rather than the last.
        todo = sorted((i for i, text in enumerate(texts) if text.strip()), key=lambda i: -len(texts[i]))
        for start in range(0, len(todo), batch_size):
            indices = todo[start : start + batch_size]
            inputs = self.tokenizer(
                [texts[i] for i in indices], return_tensors="pt", padding=True, truncation=True
            ).to(self.device)
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs, forced_bos_token_id=target_id, num_beams=self.num_beams,
                    max_new_tokens=self.max_new_tokens, do_sample=False,
                )
            for i, text in zip(indices, self.tokenizer.batch_decode(output, skip_special_tokens=True)):
                results[i] = text
        return results
