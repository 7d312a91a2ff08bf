"""``data.augment`` on the accelerator: the changes applied inside the compiled training step, on every Keras backend.

The host hands over each training batch as (uint8 images, ``PARAMS`` per example) instead of
augmented float32 images: ``trainer.data.augment.device_params`` computes those few numbers per image
(crop place, flips, the affine map, contrast factor, erasing box, the batch's mix) from the same
(seed, epoch, position) draws and with the same functions as the NumPy changes, so a resumed run
still sees the very batches an uninterrupted one does. ``DeviceAugment`` applies them with
``keras.ops`` only (gathers, ``where``, arithmetic): one definition that TensorFlow, JAX and PyTorch
compile into the step, equal to the NumPy reference (``trainer.data.augment``) to float rounding.

Why: on one H200 the NumPy changes on the host fed cifar10_94 at a third of the GPU's speed (issue 25).
Why not Keras's preprocessing layers: their draws come from a seed generator's state, not from
(seed, epoch, position), so a killed and resumed run would not see the same batches.

``install(model, augment)`` wraps the model's ``train_step`` (that instance only, as ``train.ema``
does) so that it augments ``x`` and mixes the targets before the step it wraps; the model itself
stays the plain classifier: validation, test, ``model.h5``, checkpoints and exports never see the
augmentation, and a model that never trained on device-augmented batches is unchanged.

What stays on the host (``trainer.data.augment.augment_batch``, as before): ``rand_augment``
(equalize's per-image histograms and the 14 ops per layer have no reasonable gather form), and every
run with a ``distribute.strategy`` (a replica would mix only its share of the batch).
"""
from __future__ import annotations

from typing import Any

from trainer.data.augment import PARAMS, uses_affine

_MARK = "_trainer_augment_inner"  # on the installed step: the step it wraps


def runs_on_device(augment: Any, strategy: str = "none") -> bool:
    """Whether ``data.augment`` runs inside the training step (else on the host, as NumPy)."""
    return augment is not None and augment.active and augment.rand_augment is None and strategy == "none"


def _column(params, name: str):
    return params[:, PARAMS[name]]


def _reflect(index, size: int):
    """Indices reflected into 0..size-1 as Keras's ``fill_mode='reflect'`` (d c b a | a b c d | d c b a), any distance."""
    from keras import ops

    index = ops.mod(index, 2 * size)
    return ops.where(index >= size, 2 * size - 1 - index, index)


def _mirror(index, size: int):
    """Indices reflected as ``np.pad(mode='reflect')`` (d c b | a b c d | c b a), within one image size."""
    from keras import ops

    index = ops.abs(index)
    return ops.where(index >= size, 2 * (size - 1) - index, index)


def _inside(top, bottom, left, right, height: int, width: int):
    """Where rows top..bottom-1 and columns left..right-1 of each image lie: bool (B, H, W) (bounds (B, 1, 1))."""
    from keras import ops

    rows = ops.reshape(ops.arange(height, dtype="float32"), (1, -1, 1))
    cols = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, -1))
    return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)


class DeviceAugment:
    """``data.augment`` (less ``rand_augment``) as ``keras.ops``: ``(uint8 images, params, targets) -> (float32 images, targets)``.

    Which changes run is decided here, from the config (static: nothing switched off is traced).
    """

    def __init__(self, augment: Any):
        if augment.rand_augment is not None:
            raise ValueError("rand_augment runs on the host (trainer.data.augment.augment_batch)")
        self.augment = augment

    def __call__(self, images: Any, params: Any, targets: Any = None) -> tuple[Any, Any]:
        from keras import ops

        augment = self.augment
        greyscale = len(images.shape) == 3
        if greyscale:
            images = ops.expand_dims(images, -1)
        params = ops.cast(params, "float32")
        affine = uses_affine(augment)
        flips = augment.flip != "none" and not affine  # with an affine map the flips are part of it
        if augment.crop or flips:
            images = self.crop_and_flip(images, params, flip=flips)
        images = ops.cast(images, "float32")
        if affine:
            images = self.affine(images, params)
        if augment.contrast:
            images = self.contrast(images, params)
        if augment.random_erasing:
            images = self.erase(images, params)
        if augment.mixes:
            images, targets = self.mix(images, params, targets)
        return (ops.squeeze(images, -1) if greyscale else images), targets

    # ------------------------------------------------------------------ the changes

    @staticmethod
    def _gather(images, rows, cols):
        """``images[b, rows[b, i, j], cols[b, i, j]]`` for every b, i, j: one gather of pixel rows (B, H, W, C)."""
        from keras import ops

        batch, height, width, channels = ops.shape(images)
        flat = ops.reshape(images, (-1, channels))
        base = ops.reshape(ops.arange(batch, dtype="int32") * height, (-1, 1, 1))
        return ops.take(flat, (base + rows) * width + cols, axis=0)

    def crop_and_flip(self, images, params, flip: bool):
        """Pad by ``crop`` (zeros or reflect), cut back at each image's offsets, and mirror where its flips say: one gather."""
        from keras import ops

        augment = self.augment
        height, width = images.shape[1], images.shape[2]
        pad = int(augment.crop)
        rows = ops.reshape(ops.arange(height, dtype="int32"), (1, -1))
        cols = ops.reshape(ops.arange(width, dtype="int32"), (1, -1))
        if flip:
            rows = ops.where(_column(params, "flip_v")[:, None] > 0.5, height - 1 - rows, rows)
            cols = ops.where(_column(params, "flip_h")[:, None] > 0.5, width - 1 - cols, cols)
        if pad:
            rows = rows + ops.cast(_column(params, "crop_y"), "int32")[:, None] - pad
            cols = cols + ops.cast(_column(params, "crop_x"), "int32")[:, None] - pad
        rows = ops.broadcast_to(rows, (ops.shape(params)[0], height))[:, :, None]
        cols = ops.broadcast_to(cols, (ops.shape(params)[0], width))[:, None, :]
        if pad and augment.crop_padding == "reflect":
            return self._gather(images, _mirror(rows, height), _mirror(cols, width))
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        out = self._gather(images, ops.clip(rows, 0, height - 1), ops.clip(cols, 0, width - 1))
        return ops.where(inside[..., None], out, ops.zeros_like(out)) if pad else out

    def affine(self, images, params):
        """Output pixel p samples c + A (p - c - t), bilinearly, edges reflected (``trainer.data.augment.affine_resample``)."""
        from keras import ops

        height, width = images.shape[1], images.shape[2]
        cy, cx = (height - 1) / 2.0, (width - 1) / 2.0

        def per_image(name):
            return _column(params, name)[:, None, None]

        ry = ops.reshape(ops.arange(height, dtype="float32"), (1, -1, 1)) - cy - per_image("shift_y")
        rx = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, -1)) - cx - per_image("shift_x")
        sy = cy + per_image("a00") * ry + per_image("a01") * rx
        sx = cx + per_image("a10") * ry + per_image("a11") * rx
        y0, x0 = ops.floor(sy), ops.floor(sx)
        wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
        y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
        rows = [_reflect(y, height) for y in (y0, y0 + 1)]
        cols = [_reflect(x, width) for x in (x0, x0 + 1)]
        top = self._gather(images, rows[0], cols[0]) * (1 - wx) + self._gather(images, rows[0], cols[1]) * wx
        bottom = self._gather(images, rows[1], cols[0]) * (1 - wx) + self._gather(images, rows[1], cols[1]) * wx
        return top * (1 - wy) + bottom * wy

    @staticmethod
    def contrast(images, params):
        """(pixel - mean) * f + mean per image and channel, clipped to 0..255."""
        from keras import ops

        factor = _column(params, "contrast")[:, None, None, None]
        mean = ops.mean(images, axis=(1, 2), keepdims=True)
        return ops.clip((images - mean) * factor + mean, 0.0, 255.0)

    def erase(self, images, params):
        """Each erased image's box filled with its own mean per channel."""
        from keras import ops

        height, width = images.shape[1], images.shape[2]
        top, left = _column(params, "erase_top")[:, None, None], _column(params, "erase_left")[:, None, None]
        bottom = top + _column(params, "erase_height")[:, None, None]
        right = left + _column(params, "erase_width")[:, None, None]
        inside = _inside(top, bottom, left, right, height, width) & (_column(params, "erase")[:, None, None] > 0.5)
        mean = ops.mean(images, axis=(1, 2), keepdims=True)
        return ops.where(inside[..., None], mean, images)

    def mix(self, images, params, targets):
        """The batch mixed with itself reversed (mixup or cutmix, as the batch's first row says); the one-hot targets too."""
        from keras import ops

        augment = self.augment
        partner = ops.flip(images, axis=0)
        first = params[0]
        mixed = None
        if augment.mixup:
            lam = first[PARAMS["mix_lambda"]]
            mixed = ops.clip(lam * images + (1.0 - lam) * partner, 0.0, 255.0)
        if augment.cutmix:
            height, width = images.shape[1], images.shape[2]
            box = _inside(*(_column(params, name)[:, None, None] for name in ("cut_top", "cut_bottom", "cut_left", "cut_right")), height, width)
            pasted = ops.where(box[..., None], partner, images)
            mixed = pasted if mixed is None else ops.where(first[PARAMS["mix_cutmix"]] > 0.5, pasted, mixed)
        if targets is not None:
            targets = ops.cast(targets, "float32")
            weight = first[PARAMS["mix_target_lambda"]]
            targets = weight * targets + (1.0 - weight) * ops.flip(targets, axis=0)
        return mixed, targets


# --------------------------------------------------------------------------- the training step


def augmented_data(apply: DeviceAugment, data: Any) -> Any:
    """A training batch ((uint8 images, params), targets[, weights]) as the classifier trains on it; other batches as they are."""
    import keras

    x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
    if not (isinstance(x, (tuple, list)) and len(x) == 2):
        return data
    images, y = apply(x[0], x[1], y)
    return keras.utils.pack_x_y_sample_weight(images, y, weights)


def _plain_batch(data: Any) -> Any:
    """A batch with the params left out (what ``_symbolic_build`` builds the metrics from: shapes and dtypes only)."""
    import keras

    x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
    if isinstance(x, (tuple, list)) and len(x) == 2:
        x = x[0]
    return keras.utils.pack_x_y_sample_weight(x, y, weights)


def install(model: Any, augment: Any) -> None:
    """Make ``model``'s training step augment its batches first (this instance; again after a recompile or ``train.ema``'s attach)."""
    import keras

    uninstall(model)
    apply = DeviceAugment(augment)
    inner = model.train_step  # the class's step, or train.ema's wrapper of it
    if keras.backend.backend() == "jax":
        def train_step(state, data):
            return inner(state, augmented_data(apply, data))
    else:
        def train_step(data):
            return inner(augmented_data(apply, data))

    setattr(train_step, _MARK, inner)
    build = type(model)._symbolic_build.__get__(model)

    def symbolic_build(iterator=None, data_batch=None):
        """Keras builds the metrics from the first batch before training: from its images, without the params."""
        if data_batch is None and iterator is not None and _needs_build(model):
            for _, _, data_or_iterator in iterator:  # as Keras's own _symbolic_build takes the first batch
                data_batch = data_or_iterator[0] if isinstance(data_or_iterator, (list, tuple)) else next(data_or_iterator)
                break
        if data_batch is None:
            return build(iterator=iterator)
        return build(data_batch=_plain_batch(data_batch))

    setattr(symbolic_build, _MARK, build)
    model.train_step = train_step
    model._symbolic_build = symbolic_build
    model.train_function = None  # built again, with the augmentation, at the next fit


def uninstall(model: Any) -> None:
    """Undo ``install`` (the model trains on the batches as they come); nothing when it was not installed."""
    for name in ("train_step", "_symbolic_build"):
        current = model.__dict__.get(name)
        if current is not None and hasattr(current, _MARK):
            inner = getattr(current, _MARK)
            if getattr(inner, "__self__", None) is model and getattr(inner, "__func__", None) is getattr(type(model), name, None):
                del model.__dict__[name]  # the class's own method again
            else:
                setattr(model, name, inner)
            model.train_function = None


def _needs_build(model: Any) -> bool:
    """Whether Keras's ``_symbolic_build`` would build something (it reads a batch only then)."""
    metrics, loss = getattr(model, "_compile_metrics", None), getattr(model, "_compile_loss", None)
    return (
        not all(layer.built for layer in model._flatten_layers())
        or (metrics is not None and not metrics.built)
        or (loss is not None and not loss.built)
    )
