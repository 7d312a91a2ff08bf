"""Training in two phases (``model.fine_tune``), as the Keras transfer-learning guide does.

Phase ``head``: ``train.epochs`` epochs with the backbone frozen (on cached features when the
cache applies). Phase ``fine_tune``: unfreeze the backbone (all of it or its top N layers;
BatchNormalization layers stay frozen, so they run in inference mode and their moving
statistics do not change), recompile with ``fine_tune.learning_rate`` (a fresh optimizer of
the configured kind) and continue to epoch ``train.epochs + fine_tune.epochs`` on the images.

``history.csv`` gets a ``phase`` column. Resume works across the boundary: a checkpoint from
the head phase finishes that phase (or, at its last epoch, only restores its weights), one
from the fine-tune phase rebuilds the unfrozen, recompiled model before restoring weights and
optimizer state.
"""
from __future__ import annotations

from typing import Any

HEAD, FINE_TUNE = "head", "fine_tune"


def total_epochs(config) -> int:
    """Epochs of both phases together (what the run's epoch numbers count up to)."""
    fine_tune = getattr(config.model, "fine_tune", None)
    return config.train.epochs + (fine_tune.epochs if fine_tune is not None else 0)


def unfreeze(model, model_config) -> None:
    """Make the backbone trainable as ``fine_tune.unfreeze`` says, BatchNormalization layers kept frozen."""
    from trainer.models.backbone_head import set_backbone_trainable

    features = model.get_layer("features")
    features.trainable = True  # Keras sets every layer inside; the backbone's own choice follows
    unfreeze_setting = model_config.fine_tune.unfreeze
    set_backbone_trainable(
        features.get_layer(model_config.backbone), True if unfreeze_setting == "all" else int(unfreeze_setting), freeze_batch_norm=True
    )


def fine_tune_config(config):
    """``config`` with the optimizer's learning rate set to ``fine_tune.learning_rate`` (its other parameters kept)."""
    from trainer.config.schema import NamedSpec

    optimizer = NamedSpec.model_validate(
        {"name": config.optimizer.name, **config.optimizer.params, "learning_rate": config.model.fine_tune.learning_rate}
    )
    return config.model_copy(update={"optimizer": optimizer})


def fit_in_phases(training: Any, user_callbacks: list[Any], settings: dict[str, Any]) -> None:
    """Run the head phase, then the fine-tune phase, on ``training`` (a ``trainer.run.training.Training``)."""
    from trainer.models.compile import compile_model

    config = training.config
    head_epochs = config.train.epochs
    resumed_at = training.resume.epoch if training.resume else 0
    if resumed_at <= head_epochs:
        # At the boundary this fits no epoch, but its checkpointer still restores the head phase's weights.
        training.fit_phase(training.phase_callbacks(user_callbacks, training.resume, HEAD), epochs=head_epochs, **settings)
    if training.cached is not None:  # the backbone is about to change: its cached features no longer hold
        training.cached.cleanup()
        training.cached = None
    training.events.on_notice(
        f"fine-tuning: backbone unfrozen ({config.model.fine_tune.unfreeze} layers, BatchNormalization kept frozen), "
        f"learning rate {config.model.fine_tune.learning_rate:g}, epochs {head_epochs + 1}-{total_epochs(config)}."
    )
    unfreeze(training.model, config.model)
    compile_model(training.model, fine_tune_config(config), training.plan, training.steps_per_epoch)
    if training.averager is not None:  # the fresh optimizer gets the average, carried over (trainer.run.ema)
        training.averager.attach(training.model)
    resume = training.resume if resumed_at > head_epochs else None
    phase_settings = {**settings, "initial_epoch": max(resumed_at, head_epochs)}
    training.fit_phase(training.phase_callbacks(user_callbacks, resume, FINE_TUNE), epochs=total_epochs(config), **phase_settings)
