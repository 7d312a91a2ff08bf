"""model.fine_tune: head phase, then the top of the backbone unfrozen at a low learning rate; resume across phases."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import yaml

import trainer
from tests.conftest import StopAfter, tiny_config
from tests.datagen import write_mnist_npz
from trainer.models import load_model
from trainer.run.rundir import read_history

UNFROZEN = 12  # the top layers of MobileNetV2 that fine-tuning trains


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A MobileNetV2 weights file (the "pretrained" start), a tiny dataset and a two-phase config."""
    root = tmp_path_factory.mktemp("fine_tune")
    # the same start in every worker, whatever ran before it there: with Keras's global state (seed generator, name
    # counters) left by earlier tests the start differed by worker, and in CI one start left block_16_expand unchanged
    keras.backend.clear_session()
    keras.utils.set_random_seed(11)
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    reference.save_weights(root / "start.weights.h5")
    start = [[np.array(w) for w in layer.get_weights()] for layer in reference.layers]  # by position: auto names vary
    data = write_mnist_npz(root / "m.npz", n_train=16, n_test=8, num_classes=3)
    config = tiny_config(data, train={"epochs": 1, "batch_size": 8})
    config["model"] = {
        "type": "backbone_head", "backbone": "mobilenet_v2", "weights": str(root / "start.weights.h5"),
        "head": {"hidden_units": [4], "dropout": 0.0},
        "fine_tune": {"epochs": 2, "learning_rate": 0.01, "unfreeze": UNFROZEN},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = trainer.train(path, run_dir=root / "reference")
    assert result.status == "completed"
    return root, path, start


def backbone_of(run_dir, file="model.h5"):
    return load_model(run_dir / file).get_layer("features").get_layer("mobilenet_v2")


def last_epoch_file(run_dir):
    """The last epoch's weights: ``last.h5`` when ``model.h5`` holds an earlier, better epoch (trainer.run.best), else ``model.h5``."""
    return "last.h5" if (run_dir / "last.h5").exists() else "model.h5"


@pytest.mark.slow
def test_frozen_layers_keep_their_weights_unfrozen_ones_change_and_batch_norm_statistics_stay(setup):
    root, _, start = setup
    # the weights after both phases: model.h5 is the best epoch by val_loss, which may be the head phase's (backbone untouched)
    layers = backbone_of(root / "reference", last_epoch_file(root / "reference")).layers
    assert len(layers) == len(start)
    first_unfrozen = len(layers) - UNFROZEN
    for index, layer in enumerate(layers[:first_unfrozen]):
        for before, after in zip(start[index], layer.get_weights()):
            np.testing.assert_array_equal(before, after, err_msg=layer.name)
    norms = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.BatchNormalization)]
    assert any(i >= first_unfrozen for i in norms)
    for index in norms:  # gamma, beta and the moving mean and variance: inference mode all along
        for before, after in zip(start[index], layers[index].get_weights()):
            np.testing.assert_array_equal(before, after, err_msg=layers[index].name)
    trained = [i for i in range(first_unfrozen, len(layers)) if layers[i].weights and i not in norms]
    assert trained
    for index in trained:
        assert any(not np.array_equal(b, a) for b, a in zip(start[index], layers[index].get_weights())), layers[index].name

    rows = read_history(root / "reference" / "history.csv")
    assert [(row["epoch"], row["phase"]) for row in rows] == [(1, "head"), (2, "fine_tune"), (3, "fine_tune")]
    assert rows[0]["learning_rate"] == pytest.approx(0.01) and rows[1]["learning_rate"] == pytest.approx(0.01)




@pytest.mark.slow
@pytest.mark.first  # long: started early, so that it does not end the suite alone
def test_resume_on_both_sides_of_the_phase_boundary_matches_the_uninterrupted_run(setup):
    root, path, _ = setup
    run_dir = root / "resumed"
    # stopped during epoch 2: the checkpoint is epoch 1, the head phase's last (resume restores it, then fine-tunes)
    assert trainer.train(path, run_dir=run_dir, events=[StopAfter(2)]).status == "stopped"
    # stopped during epoch 3: the checkpoint is epoch 2, inside fine-tuning (resume rebuilds the unfrozen model first)
    assert trainer.train(path, run_dir=run_dir, resume=True, events=[StopAfter(3)]).status == "stopped"
    assert trainer.train(path, run_dir=run_dir, resume=True).status == "completed"
    got, want = read_history(run_dir / "history.csv"), read_history(root / "reference" / "history.csv")
    assert [(r["epoch"], r["phase"]) for r in got] == [(r["epoch"], r["phase"]) for r in want]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-4) and g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-4)
    for a, b in zip(backbone_of(run_dir).weights, backbone_of(root / "reference").weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)
