"""Selectors turn scored candidates into preference pairs (and, later, lists)."""
