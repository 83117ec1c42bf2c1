"""Prompts: read sources (files, Hugging Face datasets), normalise to chat messages, dedupe."""
from prefsynth.prompts.normalize import PromptSourceError, load_prompts, read_sources

__all__ = ["PromptSourceError", "load_prompts", "read_sources"]
