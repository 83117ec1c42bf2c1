"""Keep code, URLs, placeholders and markup out of the translator's hands.

Each protected span becomes a numbered sentinel (⟦0⟧, ⟦1⟧, ...) before translation and is put
back afterwards. A translation that lost, duplicated or invented a sentinel is rejected with
the reason, never returned with the span silently dropped.
"""
from __future__ import annotations

import re

_PROTECTED = re.compile(
    r"```.*?(?:```|$)"  # fenced code blocks
    r"|`[^`\n]+`"  # inline code
    r"|(?:https?://|ftp://|www\.)[^\s<>()\]]*[^\s<>()\].,;:!?'\"]"  # URLs, minus trailing punctuation
    r"|[\w.+-]+@[\w-]+\.[\w.]+"  # e-mail addresses
    r"|\{\{[^{}]*\}\}|\{[A-Za-z_][\w.]*\}|%\([A-Za-z_]\w*\)[sdif]|%[sdif]|\$\{?[A-Z_][A-Z0-9_]*\}?"  # placeholders
    r"|</?[A-Za-z][\w-]*(?:\s[^<>]*)?/?>",  # markup tags
    re.DOTALL,
)
_SENTINEL = re.compile(r"⟦(\d+)⟧")


class LostSpan(ValueError):
    """The translation does not carry every protected span exactly once."""


def protect(text: str) -> tuple[str, list[str]]:
    spans: list[str] = []

    def replace(match: re.Match) -> str:
        spans.append(match.group(0))
        return f"⟦{len(spans) - 1}⟧"

    return _PROTECTED.sub(replace, text), spans


def restore(text: str, spans: list[str]) -> str:
    found = [int(n) for n in _SENTINEL.findall(text)]
    if sorted(found) != list(range(len(spans))):
        raise LostSpan(f"expected sentinels 0..{len(spans) - 1} once each, found {found}")
    return _SENTINEL.sub(lambda m: spans[int(m.group(1))], text)
