"""The summary figures of ``trainer eval`` against hand-computed values (scikit-learn's definitions, zero_division=0)."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.inference.evaluate import confusion_matrix, normalized_rows, per_class_scores, summary_scores

# scikit-learn's own documentation example for precision_recall_fscore_support:
# y_true = [0, 1, 2, 0, 1, 2], y_pred = [0, 2, 1, 0, 0, 1] -> macro P 0.2222, R 0.3333, F1 0.2667; weighted the same here.
Y_TRUE = np.array([0, 1, 2, 0, 1, 2])
Y_PRED = np.array([0, 2, 1, 0, 0, 1])


def test_macro_and_weighted_scores_match_scikit_learns_documented_example():
    scores = summary_scores(confusion_matrix(Y_TRUE, Y_PRED, 3))
    assert scores["macro_precision"] == pytest.approx(2 / 9)
    assert scores["macro_recall"] == pytest.approx(1 / 3)
    assert scores["macro_f1"] == pytest.approx(4 / 15)
    assert scores["weighted_precision"] == pytest.approx(2 / 9)
    assert scores["weighted_f1"] == pytest.approx(4 / 15)
    assert scores["balanced_accuracy"] == pytest.approx(1 / 3)


def test_weighted_scores_follow_the_support_and_balanced_accuracy_ignores_it():
    # 8 of class 0 (all right), 2 of class 1 (both called 0): accuracy 0.8, balanced accuracy 0.5.
    y_true = np.array([0] * 8 + [1] * 2)
    y_pred = np.zeros(10, dtype=int)
    scores = summary_scores(confusion_matrix(y_true, y_pred, 2))
    assert scores["balanced_accuracy"] == pytest.approx(0.5)
    assert scores["macro_recall"] == pytest.approx(0.5)
    assert scores["weighted_recall"] == pytest.approx(0.8)
    assert scores["macro_precision"] == pytest.approx(0.4)  # class 0: 8/10, class 1: nothing predicted -> 0
    assert scores["weighted_precision"] == pytest.approx(0.8 * 0.8)


def test_a_class_absent_from_split_and_predictions_is_left_out_of_the_macro_average():
    matrix = confusion_matrix(np.array([0, 1]), np.array([0, 1]), 4)
    scores = summary_scores(matrix)
    assert scores["macro_f1"] == pytest.approx(1.0) and scores["balanced_accuracy"] == pytest.approx(1.0)


def test_a_class_only_predicted_counts_in_the_macro_precision():
    matrix = confusion_matrix(np.array([0, 0]), np.array([0, 1]), 2)
    scores = summary_scores(matrix)
    assert scores["macro_precision"] == pytest.approx(0.5)  # class 0: 1/1, class 1: 0/1
    assert scores["balanced_accuracy"] == pytest.approx(0.5)  # class 0 only: recall 1/2


def test_per_class_rows_agree_with_the_summary():
    matrix = confusion_matrix(Y_TRUE, Y_PRED, 3)
    rows = per_class_scores(matrix, ["a", "b", "c"])
    assert summary_scores(matrix)["macro_f1"] == pytest.approx(np.mean([row["f1"] for row in rows]))


def test_rows_are_normalised_by_the_true_class_and_an_empty_row_stays_zero():
    matrix = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    normal = normalized_rows(matrix)
    assert normal.tolist() == [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]]


def test_an_empty_matrix_gives_zeros_not_nan():
    scores = summary_scores(np.zeros((3, 3), dtype=int))
    assert all(value == 0.0 for value in scores.values())


def test_the_confusion_matrix_picture_has_counts_and_normalised_rows_side_by_side_titled_with_the_accuracy(tmp_path):
    import io

    from PIL import Image

    from trainer.inference.plots import confusion_matrix_png, is_trainer_png

    matrix = confusion_matrix(Y_TRUE, Y_PRED, 3).tolist()
    data = confusion_matrix_png(matrix, ["a", "b", "c"], "test")
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.width > 1.8 * image.height  # two square panels side by side
    path = tmp_path / "confusion_matrix-test.png"
    path.write_bytes(data)
    assert is_trainer_png(path)


def test_the_title_states_the_accuracy_of_the_matrix(monkeypatch):
    from trainer.inference import plots

    titles = []
    real = plots.png_bytes
    monkeypatch.setattr(plots, "png_bytes", lambda figure: titles.append(figure._suptitle.get_text()) or real(figure))
    plots.confusion_matrix_png(confusion_matrix(Y_TRUE, Y_PRED, 3).tolist(), ["a", "b", "c"], "test")
    assert titles == ["test; accuracy 0.3333 of 6"]
