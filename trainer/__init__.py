"""trainer: train, evaluate and use Keras image classifiers from one YAML config."""

__version__ = "0.1.0"
