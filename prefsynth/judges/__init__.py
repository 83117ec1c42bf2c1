"""Judges add score columns to the candidates table; they never remove rows."""
