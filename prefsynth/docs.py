"""Generate the config reference from the pydantic models (the README embeds its output)."""
from __future__ import annotations

import re
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from prefsynth import config as c
from prefsynth.eval import config as eval_config
from prefsynth.iteration import config as iterate_config
from prefsynth.train import config as train_config

SECTIONS = [
    ("Pipeline (top level)", c.PipelineConfig),
    ("sources[]", c.Source),
    ("sources[].columns", c.Columns),
    ("balance", c.Balance),
    ("translate", c.Translate),
    ("generators[]", c.Generator),
    ("generators[].translator", c.Translator),
    ("translate.quality", c.TranslationQuality),
    ("judges[] (type: reward_model)", c.RewardModelJudge),
    ("judges[] (type: llm_judge)", c.LlmJudge),
    ("judges[] (type: comet)", c.CometJudge),
    ("judges[] (type: embedding)", c.EmbeddingJudge),
    ("calibration[]", c.Calibration),
    ("ensemble", c.Ensemble),
    ("engine (generators[].engine, judges[].engine)", c.Engine),
    ("filters[] (type: finish_reason)", c.FinishReasonFilter),
    ("filters[] (type: length)", c.LengthFilter),
    ("filters[] (type: language_id)", c.LanguageIdFilter),
    ("filters[] (type: min_score)", c.MinScoreFilter),
    *[(f"selector (method: {method})", model) for method, model in c.SELECTORS.items()],
    ("export", c.Export),
    ("report", c.Report),
    ("executor (type: local)", c.LocalExecutor),
    ("executor (type: ray)", c.RayExecutor),
    ("prefsynth train: training config", train_config.TrainConfig),
    ("prefsynth eval: eval config", eval_config.EvalConfig),
    ("prefsynth eval: models[]", eval_config.EvalModel),
    ("prefsynth eval: judge[] (type: reward_model)", eval_config.EvalRewardJudge),
    ("prefsynth eval: judge[] (type: llm_judge)", eval_config.EvalLlmJudge),
    ("prefsynth eval: language_id", eval_config.AnswerLanguage),
    ("prefsynth eval: decontaminate", eval_config.Decontaminate),
    ("prefsynth train: lora", train_config.LoraOptions),
    ("prefsynth iterate: iterate config", iterate_config.IterateConfig),
]


def _type_name(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("prefsynth.config.", "")
    text = re.sub(r"Annotated\[(?:Union\[)?([^\]]*?)\]?, FieldInfo\(.*?\)\]", r"\1", text)
    return getattr(annotation, "__name__", text) if not typing.get_args(annotation) else text


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "`[]`" if value == [] else ("(see section)" if isinstance(value, BaseModel) else f"`{value}`")
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default!r}`" if field.default is not None else "`null`"


def config_reference_markdown() -> str:
    lines = []
    for title, model in SECTIONS:
        lines += [f"#### `{title}`", "", (model.__doc__ or "").strip().splitlines()[0], "",
                  "| option | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            kind = _type_name(field.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | {_default(field)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def update_readme(path) -> None:
    """Replace the README's generated section with the current reference."""
    from pathlib import Path

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, tail = text.index(START) + len(START), text.index(END)
    path.write_text(text[:head] + "\n" + config_reference_markdown() + "\n" + text[tail:], encoding="utf-8")
