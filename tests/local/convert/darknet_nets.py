"""Small DarkNet cfg files in the layer sets of the published ones, and random ``.weights`` for them.

Each net keeps its original's structure (layer types, options, routes) at a size that runs in
milliseconds: YOLOv3-tiny (maxpool incl. the stride-1 one and a stride-2 one on an odd size, route,
upsample, two yolo heads), YOLOv4-tiny (route groups/group_id, mish, swish), YOLOv2 (reorg, region,
depthwise conv, shortcut), and two classifiers (avgpool + softmax; connected + dropout + softmax).
"""

from __future__ import annotations

from pathlib import Path


def conv(filters, size=3, stride=1, bn=1, activation="leaky", groups=1):
    lines = ["[convolutional]"] + (["batch_normalize=1"] if bn else [])
    lines += [f"filters={filters}", f"size={size}", f"stride={stride}", "pad=1", f"activation={activation}"]
    return "\n".join(lines + ([f"groups={groups}"] if groups != 1 else []))


def section(kind, **options):
    return "\n".join([f"[{kind}]"] + [f"{key}={value}" for key, value in options.items()])


def net(height, width, channels=3):
    # training options as in the published files: the reader must skip them
    return section("net", batch=64, subdivisions=2, width=width, height=height, channels=channels,
                   momentum=0.9, decay=0.0005, learning_rate=0.001, policy="steps", steps="400000,450000")


ANCHORS = "10,14,  23,27,  37,58,  81,82,  135,169,  344,319"


def yolo(mask, classes):
    return section("yolo", mask=mask, anchors=ANCHORS, classes=classes, num=6, jitter=".3", ignore_thresh=".7",
                   truth_thresh=1, random=1)


def join(*sections) -> str:
    return "# generated for the airflow-neo DarkNet reader tests\n" + "\n\n".join(sections) + "\n"


def yolov3_tiny(size=80, classes=2) -> str:
    head = 3 * (5 + classes)
    return join(
        net(size, size),
        conv(8), section("maxpool", size=2, stride=2),                 # 0-1: 80 -> 40
        conv(16), section("maxpool", size=2, stride=2),                # 2-3: -> 20
        conv(16), section("maxpool", size=2, stride=2),                # 4-5: -> 10
        conv(32), section("maxpool", size=2, stride=2),                # 6-7: -> 5
        conv(32), section("maxpool", size=2, stride=1),                # 8-9: stride 1 keeps 5 (pads at the end)
        conv(16, size=1), conv(32),                                    # 10-11
        conv(head, size=1, bn=0, activation="linear"), yolo("3,4,5", classes),  # 12-13
        section("route", layers=-4),                                   # 14 -> 10
        conv(8, size=1), section("upsample", stride=2),                # 15-16: 5 -> 10
        section("route", layers="-1, 6"),                              # 17: 8 + 32 channels at 10
        conv(16), conv(head, size=1, bn=0, activation="linear"), yolo("0,1,2", classes),  # 18-20
    )


def yolov4_tiny(size=64, classes=1) -> str:
    head = 3 * (5 + classes)
    return join(
        net(size, size),
        conv(8, stride=2), conv(16, stride=2), conv(16),               # 0-2: 64 -> 32 -> 16
        section("route", layers=-1, groups=2, group_id=1),             # 3: second half of 2's channels
        conv(8, activation="mish"), conv(8, activation="mish"),        # 4-5
        section("route", layers="-1,-2"),                              # 6
        conv(16, size=1),                                              # 7
        section("route", layers="-6,-1"),                              # 8: 2 and 7
        section("maxpool", size=2, stride=2),                          # 9: -> 8
        conv(32, activation="swish"),                                  # 10
        conv(head, size=1, bn=0, activation="linear"),                 # 11
        yolo("3,4,5", classes).replace("[yolo]", "[yolo]\nscale_x_y=1.05\nnms_kind=greedynms"),  # 12
        section("route", layers=-3),                                   # 13 -> 10
        conv(8, size=1), section("upsample", stride=2),                # 14-15: -> 16
        section("route", layers="-1,8"),                               # 16
        conv(16, activation="logistic"), conv(head, size=1, bn=0, activation="linear"),  # 17-18
        yolo("0,1,2", classes),                                        # 19
    )


def yolov2(size=64, classes=3) -> str:
    return join(
        net(size, size),
        conv(8), section("maxpool", size=2, stride=2),                 # 0-1: -> 32
        conv(16), section("maxpool", size=2, stride=2),                # 2-3: -> 16
        conv(16, groups=16),                                           # 4: depthwise
        section("shortcut", **{"from": -2}, activation="linear"),     # 5: 4 + 3
        section("maxpool", size=2, stride=2),                          # 6: -> 8
        conv(32),                                                      # 7
        section("route", layers=5),                                    # 8: 16 ch at 16
        conv(8, size=1),                                               # 9
        section("reorg", stride=2),                                    # 10: 32 ch at 8
        section("route", layers="-1,-4"),                              # 11: 32 + 32
        conv(32),                                                      # 12
        conv(2 * (5 + classes), size=1, bn=0, activation="linear"),    # 13
        section("region", anchors="1.08,1.19,  3.42,4.41", bias_match=1, classes=classes, coords=4, num=2,
                softmax=1, jitter=".3", rescore=1, thresh=".6", random=1),  # 14
    )


def classifier_avgpool(size=34, classes=10) -> str:
    return join(
        net(size, size),
        conv(8), section("maxpool", size=2, stride=2),                 # 0-1: 34 -> 17
        section("maxpool", size=2, stride=2),                          # odd size, stride 2: 17 -> 9
        conv(16, bn=0, activation="logistic"),                         # 3
        section("dropout", probability=".5"),                          # 4
        conv(classes, size=1, bn=0, activation="linear"),              # 5
        section("avgpool"), section("softmax", groups=1),              # 6-7
    )


def classifier_connected(size=32, classes=5) -> str:
    return join(
        net(size, size),
        conv(4, stride=2), section("maxpool", size=2, stride=2),       # 0-1: -> 8
        section("connected", output=12, activation="leaky"),           # 2
        section("dropout", probability=".5"),                          # 3
        section("connected", output=classes, activation="linear"),     # 4
        section("softmax", groups=1),                                  # 5
    )


NETS = {
    "yolov3_tiny": yolov3_tiny,
    "yolov4_tiny": yolov4_tiny,
    "yolov2": yolov2,
    "classifier_avgpool": classifier_avgpool,
    "classifier_connected": classifier_connected,
}


def weights_bytes(cfg_text: str, seed: int = 0, version=(0, 2, 0)) -> bytes:
    """A ``.weights`` file for ``cfg_text``: the header, then each layer's arrays in DarkNet's order,
    random but in ranges a trained net has (unit-scale activations, positive variances)."""
    import numpy as np

    from airflow_neo.local.convert.darknet_cfg import Shape, layer_shapes, parse_cfg, weight_arrays

    net_section, layers = parse_cfg(cfg_text, "test.cfg")
    first = Shape(net_section.int("channels"), net_section.int("height"), net_section.int("width"))
    shapes = layer_shapes(layers, first)
    rng = np.random.default_rng(seed)
    major, minor, revision = version
    wide = major * 10 + minor >= 2
    parts = [np.asarray([major, minor, revision], "<i4").tobytes(), np.asarray([12345], "<i8" if wide else "<i4").tobytes()]
    for layer, previous in zip(layers, [first, *shapes[:-1]]):
        fan_in = max(1, previous.size if layer.type == "connected"
                     else (previous.c // layer.int("groups", 1)) * layer.int("size", 1) ** 2)
        for name, count in weight_arrays(layer, previous):
            parts.append(_random(rng, name, count, fan_in).astype("<f4").tobytes())
    return b"".join(parts)


def _random(rng, name, count, fan_in):
    if name in ("scales", "rolling_variance"):
        return rng.uniform(0.5, 1.5, count)
    if name == "weights":
        return rng.normal(0.0, 1.5 / fan_in ** 0.5, count)
    return rng.normal(0.0, 0.2, count)


def write_model(folder: Path, name: str, cfg_text: str, seed: int = 0) -> Path:
    """``folder/<name>.cfg`` and ``folder/<name>.weights``; returns the cfg's path."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / f"{name}.cfg"
    cfg.write_text(cfg_text)
    (folder / f"{name}.weights").write_bytes(weights_bytes(cfg_text, seed))
    return cfg
