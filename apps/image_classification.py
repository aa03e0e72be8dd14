"""The ``fashion_mnist`` app: the textbook's CNNs (section 2.3) and ViT (section 7.2) classifying Fashion-MNIST.

A declaration only (STYLE.md convention 7): data from
``pipelines.fashion_mnist``, models from ``layers.cnn_models`` and
``layers.vision_transformer.vit_classifier`` (``--model vit``),
accuracy as the metric, and the UI's image pre/post-processing. Training,
evaluation, export and the UI are the shared code in ``apps/``.

Example::

    tfsuite train fashion_mnist --model lenet5 --epochs 5
    tfsuite train fashion_mnist --model resnet18 --augment --epochs 15
    tfsuite train fashion_mnist --model vit --epochs 10
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from apps.app import App, Datasets
from apps.config import ConfigError, TrainConfig, option
from layers.cnn_models import CNN_BUILDERS
from layers.vision_transformer import vit_classifier
from pipelines import fashion_mnist

__all__ = ["FashionMNISTApp", "FashionMNISTConfig", "to_model_image"]

# The section-2.3 CNNs and the section-7.2 ViT, all ``builder(input_shape, num_classes, **options)``.
BUILDERS = {**CNN_BUILDERS, "vit": vit_classifier}
MODELS = tuple(BUILDERS)
# App-level defaults that adapt the ImageNet-sized networks to 28x28 images;
# an explicit flag (--width 32, --no-small-input, --image-size 64) wins.
SMALL_IMAGE_DEFAULTS = {
    "alexnet": {"image_size": 64},  # its 11x11/4 conv and three 3/2 pools need >= 57x57
    "vgg16": {"image_size": 32},  # five 2x2 pools need >= 32x32
    "vgg19": {"image_size": 32},
    "resnet18": {"width": 16, "small_input": True},
    "resnet50": {"width": 16, "small_input": True},
    "resnet152": {"width": 16, "small_input": True},
    "densenet121": {"growth_rate": 12, "small_input": True},
}
MODEL_OPTIONS = ("width", "small_input", "growth_rate", "dropout", "activation", "pooling")


@dataclass
class FashionMNISTConfig(TrainConfig):
    """Hyperparameters of the Fashion-MNIST classifier."""

    model: str = option("lenet5", f"a CNN of layers.cnn_models or vit (layers.vision_transformer): {', '.join(MODELS)}")
    width: typing.Optional[int] = option(
        None, "ResNet base width (app default 16 for 28x28 images); vgg_small first-stage filters (default 16)"
    )
    small_input: typing.Optional[bool] = option(
        None, "ResNet/DenseNet 3x3 stride-1 stem for small images (app default on)"
    )
    growth_rate: typing.Optional[int] = option(None, "DenseNet growth rate k (app default 12)")
    dropout: typing.Optional[float] = option(None, "dropout before the classifier (default: the builder's)")
    activation: typing.Optional[str] = option(
        None, "LeNet-5 hidden activation, e.g. tanh (the paper's, default) or relu"
    )
    pooling: typing.Optional[str] = option(None, "LeNet-5 pooling: average (the paper's, default) or max")
    image_size: typing.Optional[int] = option(
        None, "resize the 28x28 input to NxN inside the model (app default 32 for VGG, 64 for AlexNet)"
    )
    optimizer: str = option("adam", "adam or sgd (momentum 0.9, Nesterov)")
    lr_schedule: str = option("cosine", "constant or cosine (decay to 0 over all epochs)")
    weight_decay: float = option(0.0, "decoupled weight decay (AdamW / SGD); 0 disables")
    augment: bool = option(False, "random flip and translation of training images")
    max_shift: int = option(2, "largest translation in pixels when augmenting")
    validation_size: int = option(5000, "training images held out (the last ones) for validation")
    data_dir: str = option(
        "", f"folder of the idx files (default ${fashion_mnist.ENV_VAR} or {fashion_mnist.DEFAULT_DATA_DIR})"
    )

    def __post_init__(self):
        super().__post_init__()
        for name, value, choices in (
            ("model", self.model, MODELS),
            ("optimizer", self.optimizer, ("adam", "sgd")),
            ("lr_schedule", self.lr_schedule, ("constant", "cosine")),
        ):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {self.image_size}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_shift < 0:
            raise ConfigError(f"max_shift must be >= 0, got {self.max_shift}")
        model_options(self)  # a flag the chosen model does not take fails here, before any work


def model_options(config):
    """The builder's keyword arguments and the input size: app defaults, then explicit flags.

    Raises:
        ConfigError: a flag the chosen architecture does not take (``--width`` for lenet5).
    """
    options = dict(SMALL_IMAGE_DEFAULTS.get(config.model, {}))
    accepted = inspect.signature(BUILDERS[config.model]).parameters
    for name in (*MODEL_OPTIONS, "image_size"):
        value = getattr(config, name)
        if value is None:
            continue
        if name != "image_size" and name not in accepted:
            flag = "--" + name.replace("_", "-")
            takers = [m for m in MODELS if name in inspect.signature(BUILDERS[m]).parameters]
            raise ConfigError(f"{flag} does not apply to {config.model}; models that take it: {', '.join(takers)}")
        options[name] = value
    image_size = options.pop("image_size", fashion_mnist.IMAGE_SHAPE[0])
    return options, image_size


def to_model_image(image):
    """Any photo or drawing -> a Fashion-MNIST-like float32 ``(28, 28, 1)`` image in ``[0, 1]``.

    Converts to grayscale (transparent pixels count as white), pads to a
    square, resizes to 28x28, and inverts when the background is light:
    Fashion-MNIST shows light garments on a black background.

    Raises:
        ValueError: no image, or an array that is not an image.
    """
    if image is None:
        raise ValueError("No image: upload or draw an image of a clothing item.")
    array = np.asarray(image)
    if array.size == 0 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"Could not read the image (array of shape {array.shape}); upload a PNG or JPEG photo.")
    if array.dtype != np.uint8:
        array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 4:
        rgba = Image.fromarray(array, "RGBA")
        picture = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("L")
    elif array.ndim == 3 and array.shape[-1] == 3:
        picture = Image.fromarray(array, "RGB").convert("L")
    else:
        picture = Image.fromarray(array.reshape(array.shape[:2]), "L")
    gray = np.asarray(picture)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = int(np.median(border))
    if background > 127:
        picture = ImageOps.invert(picture)
        background = 255 - background
    side = max(picture.size)
    square = Image.new("L", (side, side), background)
    square.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    small = square.resize((28, 28), Image.Resampling.LANCZOS)
    return (np.asarray(small, np.float32) / 255.0)[..., np.newaxis]


class FashionMNISTApp(App):
    """Fashion-MNIST: 28x28 grayscale clothing images, 10 classes, accuracy."""

    name = "fashion_mnist"
    title = "Fashion-MNIST"
    description = "classify 28x28 clothing images (10 classes) with LeNet-5 ... DenseNet-121"
    Config = FashionMNISTConfig
    monitor = "val_accuracy"
    monitor_mode = "max"
    class_names = fashion_mnist.CLASS_NAMES

    def default_run_name(self, config):
        return config.model

    def _dataset(self, config, split, training=False):
        return fashion_mnist.make_dataset(
            split,
            batch_size=config.batch_size,
            shuffle=training,
            augment=training and config.augment,
            max_shift=config.max_shift,
            seed=config.seed,
            limit=config.limit,
            deterministic=config.deterministic,
            directory=config.data_dir or None,
            validation_size=config.validation_size,
        )

    def build_datasets(self, config):
        return Datasets(
            train=self._dataset(config, "train", training=True),
            validation=self._dataset(config, "validation"),
            test=self._dataset(config, "test"),
        )

    def build_model(self, config):
        kwargs, image_size = model_options(config)
        if image_size == fashion_mnist.IMAGE_SHAPE[0]:
            return BUILDERS[config.model](fashion_mnist.IMAGE_SHAPE, fashion_mnist.NUM_CLASSES, **kwargs)
        # Networks that need larger inputs see a resized image; callers still send 28x28.
        network = BUILDERS[config.model]((image_size, image_size, 1), fashion_mnist.NUM_CLASSES, **kwargs)
        images = keras.Input(fashion_mnist.IMAGE_SHAPE, name="image")
        resized = keras.layers.Resizing(image_size, image_size, name="resize")(images)
        return keras.Model(images, network(resized), name=f"{config.model}_{image_size}px")

    def _steps_per_epoch(self, config):
        examples = fashion_mnist.NUM_TRAIN_IMAGES - config.validation_size
        if config.limit is not None:
            examples = min(examples, config.limit)
        return -(-examples // config.batch_size)

    def compile_kwargs(self, config):
        learning_rate = config.learning_rate
        if config.lr_schedule == "cosine":
            learning_rate = keras.optimizers.schedules.CosineDecay(
                config.learning_rate, decay_steps=config.epochs * self._steps_per_epoch(config)
            )
        weight_decay = config.weight_decay or None
        if config.optimizer == "sgd":
            optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        elif weight_decay:
            optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
        else:
            optimizer = keras.optimizers.Adam(learning_rate)
        return {
            "optimizer": optimizer,
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),  # the builders return logits
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    # --- serving: float images (None, 28, 28, 1) in, class probabilities out ------

    def serving_signature(self, config):
        return {"images": tf.TensorSpec((None, *fashion_mnist.IMAGE_SHAPE), tf.float32)}

    def serving_outputs(self, model, inputs, config):
        return {"probabilities": keras.ops.softmax(model(inputs["images"], training=False), axis=-1)}

    def serving_example(self, config):
        images, _ = next(iter(self._dataset(config, "test")))
        return {"images": images.numpy()[:32]}

    # --- UI ---------------------------------------------------------------------

    def ui_inputs(self):
        import gradio as gr

        return [gr.Image(label="Clothing image (any size or colour)", type="numpy", image_mode="RGBA")]

    def ui_outputs(self):
        import gradio as gr

        return [gr.Label(label="Top-3 classes", num_top_classes=3)]

    def ui_examples(self, cache_dir):
        try:
            images, labels = fashion_mnist.load_split("test")
        except fashion_mnist.FashionMNISTNotFoundError:
            return []
        examples = []
        for index in (0, 1, 2, 13, 25):
            name = self.class_names[labels[index]].lower().replace("/", "_").replace(" ", "_")
            path = Path(cache_dir) / f"fashion_mnist_test_{index}_{name}.png"
            Image.fromarray(255 - images[index]).save(path)  # dark on light, like a photo
            examples.append([str(path)])
        return examples

    def preprocess(self, image):
        return {"images": to_model_image(image)[np.newaxis]}

    def postprocess(self, outputs):
        probabilities = np.asarray(outputs["probabilities"])[0]
        return {name: float(p) for name, p in zip(self.class_names, probabilities)}
