"""Registration shim: Hydra instantiates sweepers only from the `hydra_plugins` namespace.

Hydra imports every plugin module on every start (`python train.py --help` included), so this one
stays light: the sweeper and Optuna are imported when a multirun actually builds the sweeper.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    """lit_tf's Optuna sweeper; see lit_tf/sweeping/sweeper.py (this class only delegates to it)."""

    def __init__(self, **kwargs: Any) -> None:
        from lit_tf.sweeping.sweeper import LitTfOptunaSweeper

        self.impl = LitTfOptunaSweeper(**kwargs)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.impl.setup(*args, **kwargs)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
