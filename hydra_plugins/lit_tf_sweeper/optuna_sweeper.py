"""Registration shim: Hydra instantiates sweepers only from the `hydra_plugins` namespace."""

from lit_tf.sweeping.sweeper import LitTfOptunaSweeper


class OptunaSweeper(LitTfOptunaSweeper):
    """lit_tf's Optuna sweeper; see lit_tf/sweeping/sweeper.py."""
