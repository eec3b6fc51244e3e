"""Small TensorFlow and Keras models, built with random weights and packed as Neo model archives.

Each builder writes the model's files and ``model.tar.gz`` into a directory and returns a
:class:`tests.local.models.ModelCase` whose reference is TensorFlow itself (the Keras model
called on NHWC, the SavedModel's signature, a session over the frozen graph). tensorflow is
imported inside the builders only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.local.models import ModelCase, write_archive

SEED = 0
IMAGE = 32


def _archive(directory: Path, root: Path) -> Path:
    files = {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}
    return write_archive(directory, files)


def _with_root(case: ModelCase, root: Path) -> ModelCase:
    case.root = root  # the model's files, unpacked (for calling a converter directly)
    return case


def keras_cnn():
    """conv-bn-relu, depthwise conv-relu6, max pool, 1x1 conv, global average pool, dense."""
    import keras

    keras.utils.set_random_seed(SEED)
    layers = keras.layers
    inputs = keras.Input((IMAGE, IMAGE, 3), name="input_1")
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)
    # non-trivial batch-norm statistics, so that folding them is checked
    bn = model.layers[2]
    bn.set_weights([np.random.default_rng(SEED + i).uniform(0.5, 1.5, 8).astype("float32") for i in range(4)])
    return model


def keras_case(directory: Path, suffix: str, model=None) -> ModelCase:
    """The Keras CNN saved as ``model<suffix>`` (``.h5`` or ``.keras``); DataInputConfig NCHW."""
    import warnings

    model = model or keras_cnn()
    root = directory / f"keras{suffix.replace('.', '_')}"
    root.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras calls HDF5 legacy
        model.save(root / f"model{suffix}")
    image = np.random.default_rng(SEED).standard_normal((1, 3, IMAGE, IMAGE)).astype("float32")

    def reference(inputs: dict) -> list:
        return [np.asarray(model(inputs["input_1"].transpose(0, 2, 3, 1), training=False))]

    return _with_root(ModelCase(_archive(directory / f"archive{suffix.replace('.', '_')}", root), reference,
                                framework="KERAS", data_input_config={"input_1": [1, 3, IMAGE, IMAGE]},
                                inputs={"input_1": image}, model_file=f"model{suffix}"), root)


def saved_model_case(directory: Path, signature_key: str = "serving_custom") -> ModelCase:
    """A tf.Module SavedModel whose one signature (``signature_key``) takes ``images`` (NHWC) and
    ``bias`` and returns ``scores`` and ``features``."""
    import tensorflow as tf

    rng = np.random.default_rng(SEED)

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(rng.standard_normal((3, 3, 3, 4)).astype("float32") * 0.3)
            self.dense = tf.Variable(rng.standard_normal((4, 5)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32, name="images"),
                                      tf.TensorSpec([None, 5], tf.float32, name="bias")])
        def serve(self, images, bias):
            features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "SAME")), [1, 2])
            return {"scores": tf.nn.softmax(tf.matmul(features, self.dense) + bias), "features": features}

    module = Scorer()
    root = directory / "saved_model"
    tf.saved_model.save(module, str(root), signatures={signature_key: module.serve})
    inputs = {"images": rng.standard_normal((2, 16, 16, 3)).astype("float32"),
              "bias": rng.standard_normal((2, 5)).astype("float32")}

    def reference(feeds: dict) -> list:
        out = module.serve(tf.constant(feeds["images"]), tf.constant(feeds["bias"]))
        return [out["features"].numpy(), out["scores"].numpy()]  # the signature's keys, sorted

    return _with_root(ModelCase(_archive(directory / "saved_model_archive", root), reference, framework="TENSORFLOW",
                                data_input_config={"images": [2, 16, 16, 3], "bias": [2, 5]}, inputs=inputs,
                                model_file="saved_model.pb"), root)


def frozen_graph_case(directory: Path) -> ModelCase:
    """A frozen GraphDef: ``input_tensor`` [?, 24, 24, 3] -> conv, relu, pool -> ``output_tensor``
    (and a second terminal tensor, ``aux``, that output_names leaves out)."""
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    kernel = rng.standard_normal((3, 3, 3, 6)).astype("float32") * 0.3
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 24, 24, 3], name="input_tensor")
        y = tf.nn.relu(tf.nn.conv2d(images, tf.constant(kernel), [1, 2, 2, 1], "SAME"))
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
        tf.identity(tf.reduce_mean(y, [1, 2]), name="output_tensor")
        tf.identity(tf.reduce_max(y), name="aux")
    root = directory / "frozen"
    root.mkdir(parents=True, exist_ok=True)
    (root / "frozen_graph.pb").write_bytes(graph.as_graph_def().SerializeToString())
    inputs = {"input_tensor:0": rng.standard_normal((1, 24, 24, 3)).astype("float32")}

    def reference(feeds: dict) -> list:
        with tf.compat.v1.Session(graph=graph) as session:
            return [session.run("output_tensor:0", {"input_tensor:0": feeds["input_tensor:0"]})]

    return _with_root(ModelCase(_archive(directory / "frozen_archive", root), reference, framework="TENSORFLOW",
                                data_input_config={"input_tensor:0": [1, 24, 24, 3]}, inputs=inputs,
                                model_file="frozen_graph.pb"), root)


def unsupported_op_graph(directory: Path) -> Path:
    """A frozen graph using ``Lgamma``, an op tf2onnx 1.17 has no ONNX conversion for."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="x")
        tf.identity(tf.math.lgamma(x) + 1.0, name="y")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lgamma.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path
