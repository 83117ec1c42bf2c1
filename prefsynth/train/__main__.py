"""`torchrun --nproc-per-node N -m prefsynth.train CONFIG [--resume]`: one training process per
rank (what `prefsynth train CONFIG --nproc N` launches)."""
import argparse
import logging
import os
import sys

from prefsynth.train import load_train_config, train


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m prefsynth.train", description=__doc__)
    parser.add_argument("config", help="training config YAML")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    train(load_train_config(args.config), resume=args.resume, progress=not args.quiet)
    # Everything is written and the process group destroyed: end here. Interpreter finalisation
    # with torch.distributed's C++ threads still around can abort ("terminate called without an
    # active exception", SIGABRT; seen once in CI on a finished run), which torchrun reports as a
    # failed training.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
