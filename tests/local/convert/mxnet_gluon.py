"""Run with MXNet's Python (a side virtualenv; MXNet 1.9.1 needs numpy < 2), not by pytest:

    python mxnet_gluon.py OUT_DIR
    python mxnet_gluon.py OUT_DIR --zoo resnet18_v1 mobilenetv2_1.0 ...   (benchmarks/mxnet_models.py)

Builds small real MXNet models with random weights (and random BatchNorm statistics), exports
each as MXNet does (``HybridBlock.export``: ``NAME-symbol.json`` + ``NAME-0000.params``; the
symbol-API model through ``Symbol.save`` + ``mx.nd.save``), runs it in MXNet on a random input and
writes ``OUT_DIR/NAME/inputs.npz`` and ``outputs.npz`` (``out0``, ``out1``, ... in output order)
plus ``OUT_DIR/manifest.json`` ({name: {"data_input": {...}, "files": [...]}}). Standard
library, numpy and mxnet only (no airflow_neo import).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

SEED = 0


def _randomize(mx, net, rng) -> None:
    """Random weights, and BatchNorm statistics far from (0, 1), so that mistakes show."""
    for name, param in net.collect_params().items():
        shape = param.shape
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith(("running_mean", "beta", "bias")):
            value = rng.uniform(-0.5, 0.5, shape)
        elif name.endswith(("gamma", "alpha")):
            value = rng.uniform(0.3, 1.5, shape)  # a fixed gamma (scale=False) must still be ignored
        else:  # weights: unit gain, so that a deep net's outputs stay near 1
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        param.set_data(mx.nd.array(value.astype(np.float32)))


def _resnet(mx):
    """Gluon's own ResNet v1 (BasicBlockV1, resnet18's [2, 2, 2, 2] layers) at small widths."""
    from mxnet.gluon.model_zoo.vision.resnet import BasicBlockV1, ResNetV1

    return ResNetV1(BasicBlockV1, [2, 2, 2, 2], [8, 8, 16, 24, 32], classes=10), (1, 3, 32, 32)


def _ops_net(mx):
    """A CNN exercising the translated operators: fixed-gamma BatchNorm, per-channel PReLU, grouped
    dilated convolution, transposed convolution, instance and layer norm, ceil-mode max pooling, avg pooling without padding counted, concat,
    scalar arithmetic, clip, transpose, Dense without flattening, reshape, dropout, softmax, two outputs."""
    from mxnet.gluon import nn

    class Ops(mx.gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.conv = nn.Conv2D(8, 3, padding=1)
                self.bn_fixed = nn.BatchNorm(scale=False, epsilon=1e-3)
                self.prelu = nn.PReLU(in_channels=8)
                self.gconv = nn.Conv2D(8, 3, groups=4, dilation=2, padding=2, use_bias=False)
                self.deconv = nn.Conv2DTranspose(8, 3, strides=2, padding=1, output_padding=1)
                self.inorm = nn.InstanceNorm()
                self.lnorm = nn.LayerNorm()
                self.pool_full = nn.MaxPool2D(3, 2, ceil_mode=True)
                self.branch_a = nn.Conv2D(4, 1)
                self.branch_b = nn.Conv2D(4, 1, strides=1)
                self.avg = nn.AvgPool2D(3, 2, padding=1, count_include_pad=False)
                self.dense_nf = nn.Dense(6, flatten=False)
                self.drop = nn.Dropout(0.5)
                self.dense = nn.Dense(5)

        def hybrid_forward(self, F, x):
            y = self.prelu(self.bn_fixed(self.conv(x)))
            y = F.LeakyReLU(y, act_type="leaky", slope=0.1)
            y = F.LeakyReLU(self.gconv(y), act_type="elu", slope=0.7)
            y = self.pool_full(self.inorm(self.deconv(y)))
            y = F.concat(self.branch_a(y), F.Activation(self.branch_b(y), act_type="softrelu"), dim=1)
            y = F.LeakyReLU(self.avg(y), act_type="gelu")
            y = F.clip(y * 2.0 + 1.0, -3.0, 3.0) - 0.5
            z = F.sigmoid(y) * F.tanh(y)
            z = self.dense_nf(F.transpose(z, axes=(0, 2, 3, 1)))
            z = F.reshape(self.lnorm(z), shape=(0, -1))
            return F.softmax(self.dense(self.drop(z)), axis=-1), F.relu(z)

    return Ops(), (1, 3, 16, 16)


def _symbol_api(mx, rng, directory: str) -> tuple:
    """A symbol-API model with a SoftmaxOutput (its label a variable) and 'full' avg pooling."""
    data = mx.sym.var("data")
    net = mx.sym.Convolution(data, kernel=(3, 3), num_filter=4, no_bias=True, name="conv")
    net = mx.sym.BatchNorm(net, fix_gamma=False, eps=2e-5, name="bn")
    net = mx.sym.Activation(net, act_type="tanh", name="tanh")
    net = mx.sym.Pooling(net, kernel=(2, 2), stride=(2, 2), pool_type="avg", pooling_convention="full", name="pool")
    net = mx.sym.FullyConnected(mx.sym.Flatten(net), num_hidden=3, no_bias=True, name="fc")
    net = mx.sym.SoftmaxOutput(net, name="softmax")
    shape = (1, 2, 11, 11)
    arg_shapes, _, aux_shapes = net.infer_shape(data=shape)
    saved = {}
    for name, arg_shape in zip(net.list_arguments(), arg_shapes):
        if name not in ("data", "softmax_label"):
            saved[f"arg:{name}"] = mx.nd.array(rng.normal(0, 0.5, arg_shape).astype(np.float32))
    for name, aux_shape in zip(net.list_auxiliary_states(), aux_shapes):
        low = 0.5 if name.endswith("var") else -0.5
        saved[f"aux:{name}"] = mx.nd.array(rng.uniform(low, low + 1.0, aux_shape).astype(np.float32))
    net.save(os.path.join(directory, "classifier-symbol.json"))
    mx.nd.save(os.path.join(directory, "classifier-0000.params"), saved)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    executor = net.bind(mx.cpu(), {"data": mx.nd.array(x), "softmax_label": mx.nd.zeros((1,)),
                                   **{k[4:]: v for k, v in saved.items() if k.startswith("arg:")}},
                        aux_states={k[4:]: v for k, v in saved.items() if k.startswith("aux:")}, grad_req="null")
    return x, [out.asnumpy() for out in executor.forward(is_train=False)]


def _zoo(name: str):
    """A Gluon model zoo architecture at its full size (random weights: nothing is downloaded)."""
    from mxnet.gluon.model_zoo import vision

    def build(mx):
        size = 299 if name.startswith("inception") else 224
        return vision.get_model(name, pretrained=False), (1, 3, size, size)
    return build


def main(out_dir: str, zoo: list[str] | None = None) -> int:
    import mxnet as mx

    mx.random.seed(SEED)
    rng = np.random.RandomState(SEED)
    manifest = {}
    builders = [(name, _zoo(name)) for name in zoo] if zoo else [("resnet", _resnet), ("ops", _ops_net)]
    for name, build in builders:
        directory = os.path.join(out_dir, name)
        os.makedirs(directory, exist_ok=True)
        net, shape = build(mx)
        net.initialize()
        net.hybridize()
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        net.infer_shape(mx.nd.array(x))  # shapes the deferred parameters (a forward would leave MKLDNN layouts)
        _randomize(mx, net, rng)
        outputs = net(mx.nd.array(x))
        outputs = [outputs] if not isinstance(outputs, (list, tuple)) else outputs
        net.export(os.path.join(directory, name))
        _write(directory, manifest, name, shape, x, [out.asnumpy() for out in outputs])
    if not zoo:
        directory = os.path.join(out_dir, "classifier")
        os.makedirs(directory, exist_ok=True)
        x, outputs = _symbol_api(mx, rng, directory)
        _write(directory, manifest, "classifier", x.shape, x, outputs)
    with open(os.path.join(out_dir, "manifest.json"), "w") as handle:
        json.dump({"mxnet": mx.__version__, "models": manifest}, handle)
    return 0


def _write(directory: str, manifest: dict, name: str, shape, x, outputs) -> None:
    np.savez(os.path.join(directory, "inputs.npz"), data=x)
    np.savez(os.path.join(directory, "outputs.npz"), **{f"out{i}": out for i, out in enumerate(outputs)})
    manifest[name] = {"data_input": {"data": list(shape)},
                      "files": sorted(f for f in os.listdir(directory) if f.endswith((".json", ".params")))}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[3:] if sys.argv[2:3] == ["--zoo"] else None))
