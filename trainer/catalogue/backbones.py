"""The one table of ``keras.applications`` backbones trainer can put under a head (no TensorFlow at import).

Each entry says how to build the backbone (the ``keras.applications`` constructor), how its
published ImageNet weights expect pixels (the ``preprocess_input`` convention), the smallest
image side it takes (smaller images are zero-padded up to it inside the model, greyscale is
repeated to three channels), and where its published no-top weights live (file name for the
offline message, URL and hash for ``keras.utils.get_file``). The config checks backbone names
against this table, the pre-flight notice and the model builder read their sizes from it.
"""
from __future__ import annotations

from dataclasses import dataclass

KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"

# preprocess_input conventions (keras.applications.imagenet_utils modes), for 0..255 RGB pixels:
#   caffe: RGB -> BGR, minus the ImageNet channel means (VGG, ResNet v1)
#   tf:    x / 127.5 - 1 (ResNet v2, MobileNet v2)
#   torch: x / 255, minus the ImageNet means, over the ImageNet standard deviations (DenseNet)
#   none:  the model rescales itself and takes 0..255 as stored (EfficientNet, ConvNeXt)
PREPROCESS_MODES = ("caffe", "tf", "torch", "none")


@dataclass(frozen=True)
class Backbone:
    """One ``keras.applications`` backbone and what using it takes."""

    name: str  # the model.backbone value
    constructor: str  # attribute of keras.applications
    preprocess: str  # one of PREPROCESS_MODES
    weights_file: str  # the published no-top weights file (as keras.utils.get_file caches it)
    weights_url: str
    weights_hash: str | None = None  # as keras.applications checks it (None: Keras checks none)
    min_size: int = 32  # smallest height and width the constructor accepts
    # (name in model.h5, "module:Class") a saved model needs to load: layers Keras does not register, fixes
    load_objects: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """The name Keras uses for the architecture (in messages)."""
        return self.constructor


BACKBONES: dict[str, Backbone] = {
    entry.name: entry
    for entry in (
        Backbone("vgg16", "VGG16", "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 KERAS_APPLICATIONS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "6d6bbae143d832006294945121d1f1fc"),
        Backbone("vgg19", "VGG19", "caffe", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 KERAS_APPLICATIONS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "253f8cb515780f3b799900260a226db6"),
        Backbone("resnet50", "ResNet50", "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 KERAS_APPLICATIONS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "4d473c1dd8becc155b73f8504c6f6626"),
        Backbone("resnet50_v2", "ResNet50V2", "tf", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 KERAS_APPLICATIONS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "fac2f116257151a9d068a22e544a4917"),
        Backbone("mobilenet_v2", "MobileNetV2", "tf", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                 KERAS_APPLICATIONS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        Backbone("efficientnet_b0", "EfficientNetB0", "none", "efficientnetb0_notop.h5",
                 "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
                 "50bc09e76180e00e4465e1a485ddc09d"),
        Backbone("densenet121", "DenseNet121", "torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 KERAS_APPLICATIONS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "30ee3e1110167f948a6b9946edeeb738"),
        Backbone("convnext_tiny", "ConvNeXtTiny", "none", "convnext_tiny_notop.h5",
                 KERAS_APPLICATIONS + "convnext/convnext_tiny_notop.h5",
                 "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
                 load_objects=(("LayerScale", "keras.src.applications.convnext:LayerScale"),
                               ("StochasticDepth", "keras.src.applications.convnext:StochasticDepth"),
                               ("Add", "trainer.models.layers:PairAdd"))),
    )
}


def backbone_entry(name: str) -> Backbone:
    """The table entry for ``name`` (names are checked by the config schema first)."""
    return BACKBONES[name]


def backbone_load_objects() -> dict[str, type]:
    """What every backbone's saved model needs to load, by name (``load_model`` passes them as custom objects)."""
    import importlib

    objects: dict[str, type] = {}
    for entry in BACKBONES.values():
        for name, spec in entry.load_objects:
            module, _, attr = spec.partition(":")
            objects[name] = getattr(importlib.import_module(module), attr)
    return objects
