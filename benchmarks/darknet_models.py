"""The DarkNet reader on the layer sets of the published yolov3-tiny.cfg and yolov4-tiny.cfg at full
size (416x416, 80 classes), with random weights: float count vs the published .weights files,
ONNX (onnxruntime) and the TVM compile vs OpenCV's readNetFromDarknet, compile seconds.

    .venv/bin/python benchmarks/darknet_models.py [--no-compile]

The cfg texts are written from the published files (pjreddie/darknet cfg/yolov3-tiny.cfg,
AlexeyAB/darknet cfg/yolov4-tiny.cfg): same layers and options, training options trimmed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.local.convert.darknet_nets import weights_bytes  # noqa: E402

NET = """[net]
batch=1
subdivisions=1
width=416
height=416
channels=3
momentum=0.9
decay=0.0005
learning_rate=0.001
max_batches = 500200
policy=steps
steps=400000,450000
scales=.1,.1
"""

ANCHORS = "anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319"


def conv(filters, size=3, stride=1, bn=True, activation="leaky"):
    return ("[convolutional]\n" + ("batch_normalize=1\n" if bn else "")
            + f"filters={filters}\nsize={size}\nstride={stride}\npad=1\nactivation={activation}\n")


def yolo(mask, extra=""):
    return (f"[yolo]\nmask = {mask}\n{ANCHORS}\nclasses=80\nnum=6\njitter=.3\nignore_thresh = .7\n"
            f"truth_thresh = 1\nrandom=1\n{extra}")


def yolov3_tiny() -> str:
    parts = [NET]
    for filters in (16, 32, 64, 128, 256):
        parts += [conv(filters), "[maxpool]\nsize=2\nstride=2\n"]
    parts += [conv(512), "[maxpool]\nsize=2\nstride=1\n", conv(1024)]
    parts += [conv(256, size=1), conv(512), conv(255, size=1, bn=False, activation="linear"), yolo("3,4,5")]
    parts += ["[route]\nlayers = -4\n", conv(128, size=1), "[upsample]\nstride=2\n", "[route]\nlayers = -1, 8\n"]
    parts += [conv(256), conv(255, size=1, bn=False, activation="linear"), yolo("0,1,2")]
    return "\n".join(parts)


def _csp_block(filters):
    return [conv(filters), f"[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", conv(filters // 2), conv(filters // 2),
            "[route]\nlayers = -1,-2\n", conv(filters, size=1), "[route]\nlayers = -6,-1\n", "[maxpool]\nsize=2\nstride=2\n"]


def yolov4_tiny() -> str:
    extra = ("scale_x_y = 1.05\ncls_normalizer=1.0\niou_normalizer=0.07\niou_loss=ciou\nnms_kind=greedynms\n"
             "beta_nms=0.6\nresize=1.5\n")
    parts = [NET, conv(32, stride=2), conv(64, stride=2)]
    for filters in (64, 128, 256):
        parts += _csp_block(filters)
    parts += [conv(512), conv(256, size=1), conv(512), conv(255, size=1, bn=False, activation="linear"),
              yolo("3,4,5", extra)]
    parts += ["[route]\nlayers = -4\n", conv(128, size=1), "[upsample]\nstride=2\n", "[route]\nlayers = -1, 23\n"]
    parts += [conv(256), conv(255, size=1, bn=False, activation="linear"), yolo("1,2,3", extra)]
    return "\n".join(parts)


#: byte sizes of the published .weights files (header included)
PUBLISHED_BYTES = {"yolov3-tiny": 35_434_956, "yolov4-tiny": 24_251_276}
NETS = {"yolov3-tiny": yolov3_tiny, "yolov4-tiny": yolov4_tiny}


def _max_error(ours, theirs) -> str:
    return ", ".join(f"{float(np.abs(a - b).max()):.2e} (range {float(np.abs(b).max()):.3g})" for a, b in zip(ours, theirs))


def run(name: str, compile_too: bool, folder: Path) -> None:
    import onnxruntime as ort

    from airflow_neo.local.convert import Source, darknet

    text = NETS[name]()
    data = weights_bytes(text)
    print(f"{name}: {(len(data) - 20) // 4} floats; published .weights: {(PUBLISHED_BYTES[name] - 20) // 4}"
          f" ({'same' if len(data) == PUBLISHED_BYTES[name] else 'DIFFERENT'})")
    model_dir = folder / name
    model_dir.mkdir()
    (model_dir / f"{name}.cfg").write_text(text)
    (model_dir / f"{name}.weights").write_bytes(data)
    cfg = model_dir / f"{name}.cfg"
    started = time.monotonic()
    converted = darknet.convert(Source("DARKNET", cfg, model_dir, {}, {}, folder, print))
    print(f"  convert: {time.monotonic() - started:.2f} s")
    x = np.random.default_rng(3).uniform(0, 1, (1, 3, 416, 416)).astype(np.float32)
    session = ort.InferenceSession(str(converted.onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"data": x})
    reference = darknet.reference(cfg, {}, 2)
    started = time.monotonic()
    theirs = reference.run({"data": x})
    print(f"  {reference.name}: {time.monotonic() - started:.2f} s; onnxruntime vs OpenCV max abs error: {_max_error(ours, theirs)}")
    if compile_too:
        _compile(name, model_dir, folder, x, theirs)


def _compile(name, model_dir, folder, x, theirs):
    from airflow_neo import runtime
    from airflow_neo.local.compiler import compile_model
    from tests.local import models

    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    archive = models.write_archive(folder / f"{name}-archive", files)
    case = models.ModelCase(archive, None, framework="DARKNET", data_input_config={"data": [1, 3, 416, 416]},
                            inputs={}, model_file=f"{name}.cfg")
    request = models.make_request(case, target_platform={"Os": "LINUX", "Arch": "X86_64"})
    artifact = folder / f"{name}-out" / "model-compiled.tar.gz"
    started = time.monotonic()
    metadata = compile_model(request, str(archive), str(artifact), log=lambda _line: None, verify="gate")
    print(f"  compile: {time.monotonic() - started:.1f} s {metadata['timings_s']}; verification passed: "
          f"{metadata['verification']['passed']}")
    model = runtime.load(artifact)
    got = model.run({"data": x})
    started = time.monotonic()
    for _ in range(3):
        model.run({"data": x})
    print(f"  TVM (untuned) run: {(time.monotonic() - started) / 3 * 1000:.0f} ms; vs OpenCV max abs error: "
          f"{_max_error(got, theirs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-compile", action="store_true", help="convert and compare only")
    parser.add_argument("nets", nargs="*", default=list(NETS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="darknet-bench-") as scratch:
        for name in args.nets:
            run(name, not args.no_compile, Path(scratch))


if __name__ == "__main__":
    main()
