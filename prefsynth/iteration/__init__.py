"""On-policy rounds: generate with the current policy, judge, select, train, repeat (rounds.py)."""
from prefsynth.iteration.config import IterateConfig, load, parse
from prefsynth.iteration.rounds import IterateError, IterateResult, iterate

__all__ = ["IterateConfig", "IterateError", "IterateResult", "iterate", "load", "parse"]
