"""Custom losses for configs/mnist_custom_loss.yaml: trainer imports this file because it sits beside the config."""
import keras
from keras import ops


class FocalLoss(keras.losses.Loss):
    """Categorical focal loss (Lin et al. 2017), written out by hand: alpha * (1 - p)^gamma * cross-entropy.

    Expects one-hot labels and probabilities (softmax outputs); matches keras.losses.CategoricalFocalCrossentropy.
    """

    def __init__(self, gamma=2.0, alpha=0.25, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = gamma
        self.alpha = alpha

    def call(self, y_true, y_pred):
        y_pred = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        y_pred = ops.clip(y_pred, keras.backend.epsilon(), 1.0 - keras.backend.epsilon())
        cross_entropy = -y_true * ops.log(y_pred)
        weight = self.alpha * ops.power(1.0 - y_pred, self.gamma)
        return ops.sum(weight * cross_entropy, axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


class CrossEntropy(keras.losses.Loss):
    """Categorical cross-entropy by hand: -sum(y_true * log(p)), with the same clipping as Keras."""

    def call(self, y_true, y_pred):
        y_pred = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        y_pred = ops.clip(y_pred, keras.backend.epsilon(), 1.0 - keras.backend.epsilon())
        return -ops.sum(y_true * ops.log(y_pred), axis=-1)


def mean_cubed_error(y_true, y_pred):
    """A plain loss function (y_true, y_pred) works too: loss: my_losses:mean_cubed_error."""
    return ops.mean(ops.abs(y_true - y_pred) ** 3, axis=-1)
