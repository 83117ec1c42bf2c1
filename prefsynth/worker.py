"""Entry point of a model worker process: `python -m prefsynth.worker SPEC.json`.

Loads the stage's model once, processes the listed shards, exits. The __main__ guard matters:
vLLM starts processes of its own.
"""
import sys

from prefsynth.executor import worker_main

if __name__ == "__main__":
    worker_main(sys.argv[1])
