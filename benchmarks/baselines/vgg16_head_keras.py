"""Plain Keras baseline: the frozen-VGG16 transfer-learning tutorial on CIFAR-10 JPEG folders.

    python benchmarks/baselines/vgg16_head_keras.py CIFAR_ROOT --train 2000 --val 500 --epochs 5

CIFAR_ROOT holds train/<class>/*.jpg and test/<class>/*.jpg (benchmarks/prepare_data.py unpacks it).
ImageNet weights cannot be downloaded here, so both sides use weights=None: the cost is the same.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import keras
from PIL import Image

parser = argparse.ArgumentParser()
parser.add_argument("root", type=Path)
parser.add_argument("--train", type=int, default=2000)
parser.add_argument("--val", type=int, default=500)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()


def load(split, count):
    classes = sorted(p.name for p in (args.root / split).iterdir() if p.is_dir())
    per_class = count // len(classes)
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((args.root / split / name).iterdir())[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB").resize((32, 32))))
            labels.append(index)
    return np.stack(images).astype("float32") / 255.0, keras.utils.to_categorical(labels, len(classes))


keras.utils.set_random_seed(args.seed)
x_train, y_train = load("train", args.train)
x_val, y_val = load("test", args.val)

base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
base.trainable = False
model = keras.Sequential(
    [
        base,
        keras.layers.Flatten(),
        keras.layers.Dense(4096, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(4096, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_val, y_val), verbose=2)
loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
print(json.dumps({"val_accuracy": float(accuracy), "val_loss": float(loss)}))
