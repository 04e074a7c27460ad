"""Train a model: `python train.py [experiment=NAME] [key=value ...]` (see README.md)."""

from lit_tf.cli.train import main

if __name__ == "__main__":
    main()
