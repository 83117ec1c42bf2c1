"""Generate the config reference from the pydantic models (the README embeds its output)."""
from __future__ import annotations

import re
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from prefsynth import config as c

SECTIONS = [
    ("Pipeline (top level)", c.PipelineConfig),
    ("sources[]", c.Source),
    ("sources[].columns", c.Columns),
    ("generators[]", c.Generator),
    ("judges[] (type: reward_model)", c.RewardModelJudge),
    ("engine (generators[].engine, judges[].engine)", c.Engine),
    ("filters[] (type: finish_reason)", c.FinishReasonFilter),
    ("filters[] (type: length)", c.LengthFilter),
    ("selector", c.Selector),
    ("export", c.Export),
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
