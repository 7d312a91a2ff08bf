"""Training guards: a callback that stops ``fit`` at the first non-finite loss, before that epoch is checkpointed.
"""
from __future__ import annotations




class NonFiniteLoss(Exception):
    """Raised by the loss guard inside ``fit`` when the training loss becomes NaN or infinite."""

    def __init__(self, epoch: int, batch: int, value: float):
        super().__init__(f"the training loss became {value} in epoch {epoch}, batch {batch}")
        self.reason = str(self)


def loss_guard():
    """A callback that stops ``fit`` at the first batch whose loss is NaN or infinite (before that epoch is checkpointed)."""
    import math

    import keras

    class LossGuard(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            value = (logs or {}).get("loss")
            if value is None:
                return
            value = float(keras.ops.convert_to_numpy(value))
            if not math.isfinite(value):
                raise NonFiniteLoss(getattr(self, "_epoch", 0), batch + 1, value)

    return LossGuard()
