"""Run directories written by hand, in the formats trainer run writes (for the report and compare pages' fast tests)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import tiny_config


def history_rows(epochs: int, *, start_loss: float = 2.0, rate: float = 0.01) -> list[dict[str, Any]]:
    return [
        {"epoch": e, "accuracy": 0.5 + 0.4 * e / epochs, "loss": start_loss / e, "val_accuracy": 0.45 + 0.4 * e / epochs,
         "val_loss": start_loss / e + 0.1, "learning_rate": rate / e}
        for e in range(1, epochs + 1)
    ]


def write_run_dir(
    path: Path, *, status: str | None = "completed", epochs: int = 3, class_names: list[str] | None = None, reason: str | None = None,
    config: dict[str, Any] | None = None, rows: list[dict[str, Any]] | None = None, best_epoch: int | None = None, dataset: str = "mnist",
) -> Path:
    """config.yaml, history.csv, manifest.json and (unless ``status`` is None) metrics.json, as trainer run writes them."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config or tiny_config("/data/mnist.npz"), sort_keys=False))
    rows = history_rows(epochs) if rows is None else rows
    if rows:
        with open(path / "history.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        (path / "history.csv").write_text("")
    names = class_names if class_names is not None else [str(i) for i in range(10)]
    manifest = {"dataset": dataset, "num_classes": len(names), "class_names": names, "input_shape": [28, 28, 1], "label_encoding": "sparse",
                "loss": {"name": "sparse_categorical_crossentropy"}, "model_output": "softmax",
                "trained_on": {"backend": "tensorflow", "kind": "cpu", "devices": ["CPU"], "precision": "float32"}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    if status is not None:
        last = rows[-1] if rows else {}
        metrics: dict[str, Any] = {
            "status": status, "epochs_completed": len(rows), "wall_seconds": 12.5,
            "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")} or None,
            "device": {"backend": "tensorflow", "description": "CPU (TensorFlow, float32)", "precision": "float32"},
        }
        if reason is not None:
            metrics["reason"] = reason
        if status == "completed" and rows:
            metrics["test"] = {"accuracy": last["val_accuracy"] - 0.01, "loss": last["val_loss"] + 0.01}
            epoch = best_epoch or len(rows)
            metrics["best"] = {"monitor": "val_loss", "mode": "min", "epoch": epoch, "value": rows[epoch - 1]["val_loss"], "last_epoch": len(rows)}
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path
