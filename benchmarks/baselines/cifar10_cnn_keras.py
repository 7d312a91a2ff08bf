"""Plain Keras baseline: the small CIFAR-10 CNN of the tutorials, on the CIFAR-10 JPEG folders.

    python benchmarks/baselines/cifar10_cnn_keras.py CIFAR_ROOT --epochs 3

CIFAR_ROOT holds train/<class>/*.jpg (all 50,000 used) and test/<class>/*.jpg (all 10,000, the
validation data), as benchmarks/prepare_data.py unpacks them. The layers are the ones
benchmarks/configs/cifar10_cnn.yaml describes: two blocks of two 3x3 convolutions (32, then 64
filters), 2x2 max pooling and dropout 0.25 each, then Dense 512 + dropout 0.5 and softmax.
"""
import argparse
import json
from pathlib import Path

import keras
import numpy as np
from PIL import Image

parser = argparse.ArgumentParser()
parser.add_argument("root", type=Path)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()


def load(split):
    classes = sorted(p.name for p in (args.root / split).iterdir() if p.is_dir())
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((args.root / split / name).iterdir()):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(index)
    return np.stack(images) / 255.0, np.array(labels)


keras.utils.set_random_seed(args.seed)
x_train, y_train = load("train")
x_val, y_val = load("test")

layers = keras.layers
model = keras.Sequential(
    [
        keras.Input(shape=(32, 32, 3)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ]
)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_val, y_val), verbose=2)
loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
print(json.dumps({"val_accuracy": float(accuracy), "val_loss": float(loss)}))
