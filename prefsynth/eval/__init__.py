"""Evaluation: per-language win-rates of trained models against a baseline (`prefsynth eval`)."""
