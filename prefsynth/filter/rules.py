"""The filter stage: every configured rule, vectorised with pyarrow; the first failing rule's reason
is recorded. A candidate without the selector's score is also marked (missing_score:COLUMN)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter

from prefsynth.config import FinishReasonFilter, Filter, LanguageIdFilter, LengthFilter, MinScoreFilter
from prefsynth.filter.language import language_checks
from prefsynth.stages import Op, ShardInput, ShardOutput

_FILTERS = TypeAdapter(list[Filter])


def failures(rule, table: pa.Table) -> tuple[pa.Array, str | pa.Array, dict[str, pa.Array]]:
    """(mask of failing rows, reason, columns to add) for one rule."""
    if isinstance(rule, LanguageIdFilter):
        return language_checks(rule, table)
    if isinstance(rule, FinishReasonFilter):
        mask = pc.is_in(table["finish_reason"], value_set=pa.array(rule.drop, pa.string()))
        return mask, pc.binary_join_element_wise("finish_reason:", table["finish_reason"], ""), {}
    if isinstance(rule, LengthFilter):
        chars = pc.utf8_length(pc.utf8_trim_whitespace(table["text"]))
        short = pc.less(chars, rule.min_chars)
        if rule.max_chars is None:
            return short, f"too_short:<{rule.min_chars}_chars", {}
        long_ = pc.greater(chars, rule.max_chars)
        reason = pc.if_else(short, f"too_short:<{rule.min_chars}_chars", f"too_long:>{rule.max_chars}_chars")
        return pc.or_(short, long_), reason, {}
    if isinstance(rule, MinScoreFilter):
        if rule.column not in table.column_names:
            raise ValueError(f"min_score filter: column {rule.column!r} is not in the candidates; have {table.column_names}")
        below = pc.less(table[rule.column], rule.min)
        mask = below if rule.keep_missing else pc.or_kleene(below, pc.is_null(table[rule.column]))
        return mask, f"below_min_score:{rule.column}<{rule.min:g}", {}
    raise TypeError(f"unknown filter {rule!r}")


def apply_filters(table: pa.Table, rules: list, score_column: str) -> pa.Table:
    """Add (or overwrite) `keep` and `reason` columns, plus the columns rules add (lid_*)."""
    reason = pa.nulls(table.num_rows, pa.string())
    checks = [(pc.is_null(table[score_column]), f"missing_score:{score_column}", {})]
    checks += [failures(rule, table) for rule in rules]
    for mask, why, columns in checks:
        for name, column in columns.items():
            table = table.drop_columns(name) if name in table.column_names else table
            table = table.append_column(name, column)
        mask = pc.fill_null(mask, False)
        # Keep the first failing rule's reason.
        reason = pc.if_else(pc.and_(mask, pc.is_null(reason)), why, reason)
    for name in ("keep", "reason"):
        if name in table.column_names:
            table = table.drop_columns(name)
    keep = pc.is_null(reason)
    return table.append_column("keep", keep).append_column("reason", reason.cast(pa.string()))


class FilterCandidates(Op):

    def __init__(self, rules: list, score_column: str):
        self.rules, self.score_column = list(rules), score_column

    def config(self) -> dict:
        return {"filters": [rule.model_dump(mode="json") for rule in self.rules], "score_column": self.score_column}

    @classmethod
    def from_config(cls, config: dict) -> "FilterCandidates":
        return cls(_FILTERS.validate_python(config["filters"]), config["score_column"])

    def warm_up(self) -> None:
        if any(rule.type == "language_id" for rule in self.rules):
            from prefsynth import langid

            langid.model()
            langid.class_counts(pa.array(["warm-up"]))

    def process(self, resource, shard: ShardInput) -> ShardOutput:
        table = apply_filters(shard.table, self.rules, self.score_column)
        return ShardOutput(table, None, {"kept": int(pc.sum(table["keep"]).as_py() or 0)})
