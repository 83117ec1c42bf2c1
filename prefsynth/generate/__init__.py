"""Generate: sample N candidate responses per prompt with vLLM."""
