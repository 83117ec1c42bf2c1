"""`torchrun --nproc-per-node N -m prefsynth.train CONFIG [--resume]`: one training process per
rank (what `prefsynth train CONFIG --nproc N` launches)."""
import argparse

from prefsynth.train import load_train_config, train


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m prefsynth.train", description=__doc__)
    parser.add_argument("config", help="training config YAML")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    train(load_train_config(args.config), resume=args.resume, progress=not args.quiet)


if __name__ == "__main__":
    main()
