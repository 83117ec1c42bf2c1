"""Translate: prompts and completions into other languages."""
