"""Train a model: `python train.py [experiment=NAME] [key=value ...]` (see README.md)."""

from lit_tf.allocator import use_fast_allocator

if __name__ == "__main__":
    use_fast_allocator()  # first, before torch is imported: may re-execute with tcmalloc preloaded

    from lit_tf.cli.train import main

    main()
