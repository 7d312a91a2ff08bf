"""``train.ema``: an exponential moving average of the weights, updated inside the compiled training step.

What is averaged: every trainable float weight and the moving statistics of BatchNormalization
layers (as timm's ModelEmaV2 averages buffers: statistics gathered with the raw weights do not fit
the averaged ones). Every other non-trainable weight (frozen layers, set-once buffers such as the
whitening filters, flags) is constant or set once, and follows the raw model.

Where the average lives: one extra variable per averaged weight, plus an ``int32`` count of the
training steps, added to the *optimizer's* variables. So the checkpoint (which stores the optimizer's
variables) holds the average and the step count, and ``--resume`` is exact; on JAX they travel in the
functional training state like the optimizer's own slots. The update is part of the compiled
``train_step`` (one fused update per step, no Python loop at run time; ``steps_per_execution`` does
not change it), on TensorFlow, JAX and PyTorch alike.

When the model holds the average: from validation (``on_test_begin`` inside ``fit``) or the end of
an epoch until the next epoch begins. So validation, every callback at the epoch's end (early
stopping's best weights, model_checkpoint), the test metrics, ``model.h5`` and every export see the
average, while training continues on the raw weights, which the checkpoint stores.

Keras's own ``use_ema`` (optimizer) + ``SwapEMAWeights`` was not used: its momentum is fixed (no
warm-up), it averages trainable variables only, and its swap exchanges the two sets in place, which a
checkpoint taken at the epoch's end would store the wrong way round.
"""
from __future__ import annotations

from typing import Any

from trainer.config.ema import WARMUP_START, EmaConfig


def decay_at(settings: EmaConfig, updates: int, *, step: int = 0, total_steps: int = 1) -> float:
    """The decay of the update that follows ``updates`` earlier ones, at training step ``step`` (counted from 1) of ``total_steps``:
    ``decay``; ``min(decay, (1+t)/(10+t))`` with warm-up; ``decay x min(step / total_steps, 1)^3`` with ``warmup: cubic``."""
    if settings.warmup == "cubic":
        return settings.decay * min(step / max(total_steps, 1), 1.0) ** 3
    if not settings.warmup:
        return settings.decay
    return min(settings.decay, (1.0 + updates) / (WARMUP_START + updates))


def short_run_notice(settings: EmaConfig, steps: int) -> str | None:
    """The notice when the average without warm-up would stay close to the initial weights: it spans more steps than the run has."""
    span = settings.every / (1.0 - settings.decay)  # training steps an average of this decay roughly spans
    if settings.warmup or span <= steps:
        return None
    return (
        f"train.ema.decay {settings.decay:g} averages over about {span:,.0f} training steps, but this run trains {steps:,}; "
        f"the average (what validation, test and model.h5 use) stays close to the initial weights. "
        "Set train.ema.warmup: true or a lower decay."
    )


def averaged_variables(model) -> list[Any]:
    """The weights the average covers, in ``model.weights`` order: trainable floats and BatchNormalization's moving statistics."""
    import keras

    statistics: set[int] = set()
    for layer in model._flatten_layers(include_self=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            statistics.update(id(v) for v in (layer.moving_mean, layer.moving_variance) if v is not None)
    trainable = {id(v) for v in model.trainable_variables}
    return [
        v for v in model.weights
        if keras.backend.is_float_dtype(v.dtype) and (id(v) in trainable or id(v) in statistics)
    ]


class WeightAverage:
    """The average of one run's weights: ``attach(model)`` after every compile, ``callback()`` in every ``fit``.

    ``use_average()`` puts the average into the model (the raw values kept aside), ``use_raw()`` puts
    the raw values back; ``raw_weights()`` gives ``model.weights`` as training left them, whichever the
    model holds (what the checkpoint stores). The average and its step count are optimizer variables.
    """

    def __init__(self, settings: EmaConfig, total_steps: int = 1):
        self.settings = settings
        self.total_steps = max(int(total_steps), 1)  # the run's training steps: ``warmup: cubic`` ramps over them
        self.model: Any = None
        self.sources: list[Any] = []  # the model's averaged variables
        self.averages: list[Any] = []  # their averages (optimizer variables), same order
        self.step: Any = None  # int32 optimizer variable: training steps taken while averaging
        self.raw: dict[int, tuple[Any, Any]] = {}  # id(variable) -> (variable, its raw value) while the model holds the average

    # ------------------------------------------------------------------ set-up

    def attach(self, model) -> None:
        """Add the average to ``model.optimizer`` (compiled) and the update to ``model.train_step``.

        Called again after a recompile (the fine-tune phase gets a fresh optimizer): averages and the
        step count carry over, by variable; a weight averaged for the first time starts at its value.
        """
        import numpy as np

        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        carried = {id(source): average.numpy() for source, average in zip(self.sources, self.averages)}
        step = int(np.asarray(self.step.numpy())) if self.step is not None else 0
        sources = averaged_variables(model)
        averages = []
        for index, source in enumerate(sources):
            average = optimizer.add_variable(shape=tuple(source.shape), dtype=source.dtype, name=f"ema_{index}")
            average.assign(carried[id(source)] if id(source) in carried else source.numpy())
            averages.append(average)
        counter = optimizer.add_variable(shape=(), dtype="int32", name="ema_step")
        counter.assign(step)
        self.model, self.sources, self.averages, self.step = model, sources, averages, counter
        self._install_step(model)

    def _install_step(self, model) -> None:
        """Wrap ``model.train_step`` (this instance only) so that every step also updates the average."""
        import keras

        original = type(model).train_step.__get__(model)  # the class's step, never a wrapper of an earlier attach
        if keras.backend.backend() == "jax":
            optimizer_variables = [id(v) for v in model.optimizer.variables]
            trainable = {id(v): i for i, v in enumerate(model.trainable_variables)}
            non_trainable = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
            where = [(0, trainable[id(v)]) if id(v) in trainable else (1, non_trainable[id(v)]) for v in self.sources]
            slots = [optimizer_variables.index(id(v)) for v in self.averages]
            step_slot = optimizer_variables.index(id(self.step))

            def train_step(state, data):
                logs, (trainable_values, non_trainable_values, optimizer_values, metrics_values) = original(state, data)
                weights = [(trainable_values, non_trainable_values)[kind][index] for kind, index in where]
                new, pulled, step = self.updated([optimizer_values[slot] for slot in slots], weights, optimizer_values[step_slot])
                values = list(optimizer_values)
                for slot, value in zip(slots, new):
                    values[slot] = value
                values[step_slot] = step
                if pulled is not None:  # lookahead: the weights become the average
                    model_values = [list(trainable_values), list(non_trainable_values)]
                    for (kind, index), value in zip(where, pulled):
                        model_values[kind][index] = value
                    trainable_values, non_trainable_values = type(trainable_values)(model_values[0]), type(non_trainable_values)(model_values[1])
                return logs, (trainable_values, non_trainable_values, type(optimizer_values)(values), metrics_values)
        else:
            def train_step(data):
                logs = original(data)
                new, pulled, step = self.updated([a.value for a in self.averages], [s.value for s in self.sources], self.step.value)
                for average, value in zip(self.averages, new):
                    average.assign(value)
                for source, value in zip(self.sources, pulled or ()):
                    source.assign(value)
                self.step.assign(step)
                return logs

        model.train_step = train_step
        model.train_function = None  # built again, with the update, at the next fit

    def updated(self, averages: list[Any], weights: list[Any], step: Any) -> tuple[list[Any], list[Any] | None, Any]:
        """The averages after one more training step, the weights with ``lookahead`` (else None) and the step count.

        Backend tensors in, backend tensors out: traced once, inside the compiled step. With
        ``lookahead`` the weights of an updating step are the new average (airbench94's
        ``LookaheadState.update``: ``ema.lerp_(w, 1 - decay); w.copy_(ema)``), else they are unchanged.
        """
        from keras import ops

        settings = self.settings
        step = step + 1

        def update():
            decay = settings.decay
            if settings.warmup == "cubic":
                done = ops.minimum(ops.cast(step, "float32") / float(self.total_steps), 1.0)
                decay = decay * done * done * done
            elif settings.warmup:
                done = ops.cast(step // settings.every - 1, "float32")  # averaging updates before this one
                decay = ops.minimum(decay, (1.0 + done) / (WARMUP_START + done))
            return [ops.cast(decay, a.dtype) * a + ops.cast(1.0 - decay, a.dtype) * ops.cast(w, a.dtype) for a, w in zip(averages, weights)]

        def pulled(new):
            return [ops.cast(a, w.dtype) for a, w in zip(new, weights)]

        if settings.every == 1:
            new = update()
            return new, pulled(new) if settings.lookahead else None, step
        due = ops.equal(step % settings.every, 0)
        if not settings.lookahead:
            return ops.cond(due, update, lambda: list(averages)), None, step
        both = ops.cond(due, lambda: (lambda new: (new, pulled(new)))(update()), lambda: (list(averages), list(weights)))
        return list(both[0]), list(both[1]), step

    # ------------------------------------------------------------------ which weights the model holds

    def use_average(self) -> None:
        """Put the average into the model (idempotent); the raw values are kept for ``use_raw`` and the checkpoint."""
        if self.raw or not self.sources:
            return
        for source, average in zip(self.sources, self.averages):
            self.raw[id(source)] = (source, source.numpy())
            source.assign(average.numpy())  # a copy: on JAX one buffer in two variables could be donated away

    def use_raw(self) -> None:
        """Put the raw values back (idempotent): training continues on them."""
        for source, value in self.raw.values():
            source.assign(value)
        self.raw = {}

    def forget_raw(self) -> None:
        """The model's weights were just set from a checkpoint (raw): nothing is held aside."""
        self.raw = {}

    def raw_weights(self, model) -> list[Any]:
        """Copies of ``model.weights`` as training left them (the raw values where the model holds the average)."""
        return [self.raw[id(v)][1] if id(v) in self.raw else v.numpy() for v in model.weights]

    def average_weights(self) -> list[Any]:
        """Copies of the averages, in the order of ``sources``."""
        return [a.numpy() for a in self.averages]

    def check_stored(self, path, stored: list[Any]) -> None:
        """Refuse a checkpoint whose average or step count is malformed (``trainer.readers.ema_state``), before it is loaded."""
        from trainer.readers.ema_state import check_average_state

        variables = [id(v) for v in self.model.optimizer.variables]
        if len(stored) != len(variables):
            from trainer.errors import RunDirError

            raise RunDirError(
                f"{path} holds {len(stored)} optimizer arrays but the model with train.ema has {len(variables)} "
                "(a checkpoint written without train.ema, or by another trainer); this run cannot be resumed."
            )
        slots = [variables.index(id(a)) for a in self.averages]
        check_average_state(path, stored, slots, self.sources, variables.index(id(self.step)))

    def callback(self):
        """The Keras callback of one ``fit`` (first in the list): the average from validation until the next epoch."""
        import keras

        average = self

        class SwapInAverage(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                average.use_raw()

            def on_test_begin(self, logs=None):  # only fit's own validation passes these callbacks
                average.use_average()

            def on_epoch_end(self, epoch, logs=None):
                average.use_average()

        return SwapInAverage()

    def to_dict(self) -> dict[str, Any]:
        """What ``metrics.json`` and ``manifest.json`` record."""
        return self.settings.model_dump()
