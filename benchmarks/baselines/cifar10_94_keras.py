"""Plain Keras baseline: airbench94 (Keller Jordan's CIFAR-10 speed-run network) written by hand, on the JPEG folders.

    python benchmarks/baselines/cifar10_94_keras.py CIFAR_ROOT --epochs 1 --limit 10240

CIFAR_ROOT holds train/<class>/*.jpg and test/<class>/*.jpg (benchmarks/prepare_data.py unpacks
them). The same network, optimizer and schedule as configs/cifar10_94.yaml, the way a Keras user
would write them without trainer:

- a frozen 2x2 conv whose 24 filters whiten the 2x2 patches of 5,000 training images (the
  eigenvectors of their covariance, scaled by 1/sqrt(eigenvalue + 5e-4), and their negatives), GELU;
- three groups of conv 3x3 (64, 256, 256; no bias, identity-initialised) -> max pool 2 -> BN -> GELU
  -> conv 3x3 -> BN -> GELU, BatchNormalization momentum 0.4, no scale, epsilon 1e-5;
- global max pooling, a bias-free Dense(10), logits x 1/9, softmax;
- SGD, Nesterov momentum 0.85, decoupled weight decay 0.009, Keras's own EMA (``use_ema=True,
  ema_momentum=0.99``); the learning rate rises linearly 0.3 -> 1.5 over the first 23% of the steps
  and falls linearly to 0.105; label smoothing 0.2 on one-hot labels; batch 1024;
- horizontal flips and 2-pixel translations (reflect padding, random 32x32 crop) in a tf.data map;
- ``--mixed-precision bfloat16``: Keras's ``mixed_bfloat16`` policy, as the config's ``train.mixed_precision``.

``--limit N`` trains on the first N/10 images of each class (0: all 50,000). The script prints
one JSON line: the seconds of each epoch (from the epoch's start to its end, training only), the
images per second and the test accuracy (plain, without test-time augmentation).
"""
import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

parser = argparse.ArgumentParser()
parser.add_argument("root", type=Path)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--limit", type=int, default=0, help="training images, N/10 a class (0: all)")
parser.add_argument("--test-limit", type=int, default=0, help="test images, N/10 a class (0: all)")
parser.add_argument("--batch-size", type=int, default=1024)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--mixed-precision", choices=["float32", "bfloat16"], default="float32",
                    help="bfloat16: Keras's mixed_bfloat16 policy (what the config's train.mixed_precision: bfloat16 sets)")
args = parser.parse_args()
if args.mixed_precision == "bfloat16":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")


def load(split, limit):
    classes = sorted(p.name for p in (args.root / split).iterdir() if p.is_dir())
    per_class = limit // len(classes) if limit else None
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((args.root / split / name).iterdir())[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(index)
    return np.stack(images), np.array(labels)


keras.utils.set_random_seed(args.seed)
x_train, y_train = load("train", args.limit)
x_test, y_test = load("test", args.test_limit)
num_classes = 10

# ---------------------------------------------------------------- the network
widths = [64, 256, 256]
layers = keras.layers


def conv_bn_gelu(x, width):
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.4, scale=False, epsilon=1e-5)(x)
    return layers.Activation("gelu")(x)


inputs = keras.Input(shape=(32, 32, 3))
x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
whiten = layers.Conv2D(24, 2, padding="valid", trainable=False)
x = layers.Activation("gelu")(whiten(x))
for width in widths:
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Activation("gelu")(layers.BatchNormalization(momentum=0.4, scale=False, epsilon=1e-5)(x))
    x = conv_bn_gelu(x, width)
x = layers.GlobalMaxPooling2D()(x)
x = layers.Dense(num_classes, use_bias=False)(x)
x = layers.Rescaling(1.0 / 9.0)(x)
outputs = layers.Activation("softmax", dtype="float32")(x)  # float32 probabilities under mixed precision
model = keras.Model(inputs, outputs)

# identity (dirac) initialisation of the 3x3 convs: each passes its first min(in, out) channels through
for layer in model.layers:
    if isinstance(layer, layers.Conv2D) and layer is not whiten:
        kernel = layer.kernel.numpy()
        count = min(kernel.shape[2], kernel.shape[3])
        kernel[:, :, :, :count] = 0.0
        kernel[1, 1, np.arange(count), np.arange(count)] = 1.0
        layer.kernel.assign(kernel)

# whitening filters from the 2x2 patches of 5,000 training images spread over the set
sample = x_train[np.linspace(0, len(x_train) - 1, min(5000, len(x_train))).astype(int)].astype(np.float64) / 127.5 - 1.0
patches = np.concatenate([sample[:, r : 31 + r, c : 31 + c, :] for r in range(2) for c in range(2)], axis=-1).reshape(-1, 12)
eigenvalues, eigenvectors = np.linalg.eigh(patches.T @ patches / len(patches))
eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
filters = (eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + 5e-4)).reshape(2, 2, 3, 12)
whiten.set_weights([np.concatenate([filters, -filters], axis=-1).astype(np.float32), np.zeros(24, np.float32)])

# ---------------------------------------------------------------- optimizer and schedule
steps_per_epoch = -(-len(x_train) // args.batch_size)
total_steps = steps_per_epoch * args.epochs


class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear start -> peak over the first ``warmup`` of the steps, then linear peak -> final."""

    def __init__(self, peak, total_steps, warmup, start, final):
        self.peak, self.total_steps, self.start, self.final = peak, total_steps, start, final
        self.warmup_steps = min(int(warmup * total_steps), total_steps - 1)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rising = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1)
        falling = self.peak + (self.final - self.peak) * keras.ops.clip(
            (step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 0.0, 1.0
        )
        return keras.ops.where(step < self.warmup_steps, rising, falling)


schedule = WarmupLinear(peak=1.5, total_steps=total_steps, warmup=0.23, start=0.3, final=0.105)
optimizer = keras.optimizers.SGD(schedule, momentum=0.85, nesterov=True, weight_decay=0.009, use_ema=True, ema_momentum=0.99)
model.compile(
    optimizer=optimizer,
    loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
    metrics=["accuracy"],
)

# ---------------------------------------------------------------- data: flips and 2-pixel reflect-padded crops


def augment(image, label):
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_crop(tf.pad(image, [[2, 2], [2, 2], [0, 0]], mode="REFLECT"), (32, 32, 3))
    return image, label


train = (
    tf.data.Dataset.from_tensor_slices((x_train, keras.utils.to_categorical(y_train, num_classes)))
    .shuffle(len(x_train), seed=args.seed)
    .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    .batch(args.batch_size)
    .prefetch(tf.data.AUTOTUNE)
)


class EpochTimer(keras.callbacks.Callback):
    seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


timer = EpochTimer()
model.fit(train, epochs=args.epochs, callbacks=[timer], verbose=2)
loss, accuracy = model.evaluate(x_test, keras.utils.to_categorical(y_test, num_classes), batch_size=args.batch_size, verbose=0)
print(json.dumps({
    "epoch_seconds": [round(s, 4) for s in timer.seconds],
    "examples_per_second": [round(len(x_train) / s, 1) for s in timer.seconds],
    "train_examples": len(x_train),
    "test_accuracy": float(accuracy),
    "test_loss": float(loss),
}))
