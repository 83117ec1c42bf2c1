"""What selectors return: row indices from a method, assembled into the Selection tables."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from prefsynth import schemas
from prefsynth.select.groups import Groups, dropped_table


@dataclass
class Selection:
    """`pairs` (pair methods) or `lists` (list-wise methods), and `dropped`: every prompt given is
    in exactly one of them. The unused one of pairs/lists is an empty table of its schema."""

    method: str
    params: dict
    pairs: pa.Table
    lists: pa.Table
    dropped: pa.Table

    @property
    def selected(self) -> pa.Table:
        return self.lists if self.method_is_listwise else self.pairs

    @property
    def method_is_listwise(self) -> bool:
        from prefsynth.config import LIST_METHODS

        return self.method in LIST_METHODS


@dataclass
class Drops:
    """Prompts a method could not use: group indices with a reason and a detail per group."""

    groups: list[np.ndarray] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    details: list[list[str]] = field(default_factory=list)

    def add(self, groups: np.ndarray, reason: str, details) -> None:
        groups = np.asarray(groups, dtype=np.int64)
        if len(groups):
            self.groups.append(groups)
            self.reasons.append(reason)
            self.details.append([details] * len(groups) if isinstance(details, str) else list(details))

    def all_groups(self) -> np.ndarray:
        return np.concatenate(self.groups) if self.groups else np.zeros(0, np.int64)

    def table(self, g: Groups) -> pa.Table:
        if not self.groups:
            return schemas.DROPPED.empty_table()
        ids = g.prompt_ids.take(pa.array(self.all_groups()))
        reasons = [reason for reason, group in zip(self.reasons, self.groups) for _ in range(len(group))]
        return dropped_table(ids, reasons, [d for details in self.details for d in details])


@dataclass
class Pairs:
    chosen: np.ndarray  # row indices into the Groups arrays, one per pair
    rejected: np.ndarray
    pair_index: np.ndarray | None = None
    drops: Drops = field(default_factory=Drops)


@dataclass
class Lists:
    chosen: np.ndarray  # row indices, grouped by prompt (ascending group), in list order
    rejected: np.ndarray
    chosen_weights: np.ndarray | None = None
    rejected_weights: np.ndarray | None = None
    drops: Drops = field(default_factory=Drops)


def _repeat(text: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([text])).cast(pa.string())


def _stats(g: Groups, group: np.ndarray) -> dict:
    return {"n_usable": pa.array(g.counts[group].astype(np.int32))}


def pairs_table(g: Groups, pairs: Pairs, method: str, min_margin: float) -> tuple[pa.Table, Drops]:
    chosen, rejected = pairs.chosen, pairs.rejected
    index = pairs.pair_index if pairs.pair_index is not None else np.zeros(len(chosen), np.int64)
    margin = g.score[chosen] - g.score[rejected]
    keep = margin > min_margin
    drops = pairs.drops
    owner = g.codes[chosen]
    if not keep.all():
        lost = np.setdiff1d(owner[~keep], owner[keep])
        best = np.full(g.size, -np.inf)
        np.maximum.at(best, owner, margin)
        drops.add(lost, "margin_below_min", [f"best margin {best[x]:.6g} <= min_margin {min_margin}" for x in lost])
        chosen, rejected, margin, owner, index = chosen[keep], rejected[keep], margin[keep], owner[keep], index[keep]
    if len(owner) > 1 and not ((owner[1:] > owner[:-1]) | ((owner[1:] == owner[:-1]) & (index[1:] > index[:-1]))).all():
        order = np.lexsort((index, owner))
        chosen, rejected, margin, owner, index = chosen[order], rejected[order], margin[order], owner[order], index[order]
    columns = {
        "prompt_id": g.prompt_ids.take(pa.array(owner)),
        "chosen_id": g.candidate_ids(chosen), "rejected_id": g.candidate_ids(rejected),
        "chosen_score": pa.array(g.score[chosen]), "rejected_score": pa.array(g.score[rejected]),
        "margin": pa.array(margin), "selector": _repeat(method, len(chosen)),
        "pair_index": pa.array(index.astype(np.int32)),
    } | _stats(g, owner)
    return pa.table(columns, schema=schemas.PAIRS), drops


def _list_array(values: pa.Array, owner: np.ndarray, groups: np.ndarray) -> pa.ListArray:
    offsets = np.searchsorted(owner, groups, side="left")
    offsets = np.append(offsets, len(owner)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def lists_table(g: Groups, lists: Lists, method: str) -> tuple[pa.Table, Drops]:
    chosen_owner, rejected_owner = g.codes[lists.chosen], g.codes[lists.rejected]
    groups = np.intersect1d(chosen_owner, rejected_owner)
    if len(groups) != len(np.union1d(chosen_owner, rejected_owner)):
        raise AssertionError(f"{method}: every listed prompt needs chosen and rejected candidates")
    weights = None
    if lists.chosen_weights is not None:
        # weights follow chosen_ids then rejected_ids in one list per prompt
        both_owner = np.concatenate([chosen_owner, rejected_owner])
        both = np.concatenate([lists.chosen_weights, lists.rejected_weights])
        side = np.concatenate([np.zeros(len(chosen_owner)), np.ones(len(rejected_owner))])
        order = np.lexsort((np.arange(len(both)), side, both_owner))
        weights = _list_array(pa.array(both[order]), both_owner[order], groups)
    columns = {
        "prompt_id": g.prompt_ids.take(pa.array(groups)),
        "chosen_ids": _list_array(g.candidate_ids(lists.chosen), chosen_owner, groups),
        "rejected_ids": _list_array(g.candidate_ids(lists.rejected), rejected_owner, groups),
        "chosen_scores": _list_array(pa.array(g.score[lists.chosen]), chosen_owner, groups),
        "rejected_scores": _list_array(pa.array(g.score[lists.rejected]), rejected_owner, groups),
        "weights": weights if weights is not None else pa.nulls(len(groups), pa.list_(pa.float64())),
        "selector": _repeat(method, len(groups)),
    } | _stats(g, groups)
    return pa.table(columns, schema=schemas.LISTS), lists.drops
