"""FP16 against FP32 on ml_c6g (Neoverse N1) under QEMU: error, library size and (crude) latency.

Each small model (the tests' ONNX CNN, two MobileNetV2 blocks, a transformer block) is compiled
for TargetDevice ml_c6g through :func:`airflow_neo.local.compiler.compile_model` twice (no option,
``precision_mode: FP16``; verification off), then both artifacts run in ONE emulated aarch64
Python (``qemu-aarch64 -cpu neoverse-n1``, the root of ``scripts/arm_root.sh``) on the same
input, interleaved, 5 rounds of 5 runs; each figure is the best round's median. The outputs are
compared with onnxruntime run here (x86-64, float32): ``max|tvm - ort| / max|ort|``.

Latency under QEMU is only a proxy, and a biased one for float16: TCG runs float32 arithmetic on
the host's FPU but float16 arithmetic through softfloat helpers, so FP16 looks slower here than it
is on a Graviton2. Usage: ``python scripts/fp16_emulated.py`` (needs the aarch64 root).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GUEST = r"""
import json, statistics, sys, time
import numpy as np
from airflow_neo import runtime
manifest = json.load(open(sys.argv[1]))
report = {}
for item in manifest:
    data = {item["input_name"]: np.load(item["input"])}
    loaded = {mode: runtime.load(path) for mode, path in item["artifacts"].items()}
    best = {mode: float("inf") for mode in loaded}
    for mode, model in loaded.items():
        for i, out in enumerate(model.run(data)):
            np.save(item["out_prefix"] + f"{mode}_{i}.npy", out)
    for _ in range(5):
        for mode, model in loaded.items():
            times = []
            for _ in range(5):
                t0 = time.perf_counter(); model.run(data); times.append(time.perf_counter() - t0)
            best[mode] = min(best[mode], statistics.median(times))
    report[item["name"]] = best
json.dump(report, open(sys.argv[2], "w"))
"""


def _cases(tmp: Path) -> list[dict]:
    from tests.local import models
    from tests.local.test_arm_emulation import _mobilenet_block_onnx

    cases = []
    for name, case in (("cnn", models.onnx_cnn(tmp / "cnn")), ("transformer_block", models.onnx_transformer(tmp / "tr"))):
        with tarfile.open(case.archive) as tar:
            onnx_bytes = tar.extractfile("model.onnx").read()
        cases.append((name, onnx_bytes, case.data_input_config))
    cases.append(("mobilenet_blocks", _mobilenet_block_onnx().SerializeToString(), {"image": [1, 16, 24, 24]}))
    return cases


def main() -> int:
    import onnxruntime

    from airflow_neo.local.compiler import compile_model
    from tests.local import models
    from tests.support import qemu

    root = qemu.find_root()
    tmp = Path(tempfile.mkdtemp(prefix="fp16-emulated-"))
    manifest, sizes, references = [], {}, {}
    for name, onnx_bytes, shapes in _cases(tmp):
        work = tmp / name
        work.mkdir(parents=True, exist_ok=True)
        (work / "model.onnx").write_bytes(onnx_bytes)
        archive = models.write_archive(work, {"model.onnx": onnx_bytes})
        [(input_name, shape)] = shapes.items()
        data = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        np.save(work / "input.npy", data)
        session = onnxruntime.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
        references[name] = session.run(None, {input_name: data})
        artifacts = {}
        for mode, options in (("fp32", None), ("fp16", {"precision_mode": "FP16"})):
            case = models.ModelCase(archive, None, framework="ONNX", data_input_config=shapes, inputs={}, model_file="model.onnx")
            request = models.make_request(case, target_device="ml_c6g", compiler_options=options, output_dir=work)
            artifact = work / f"{mode}.tar.gz"
            compile_model(request, str(archive), str(artifact), log=lambda line: None, verify="off")
            artifacts[mode] = str(artifact)
            with tarfile.open(artifact) as tar:
                sizes[(name, mode)] = tar.getmember("model.so").size
        manifest.append({"name": name, "artifacts": artifacts, "input": str(work / "input.npy"),
                         "input_name": input_name, "out_prefix": str(work / "out_")})
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    (tmp / "guest.py").write_text(GUEST)
    env = root.env({"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    subprocess.run(root.command(str(tmp / "guest.py"), str(tmp / "manifest.json"), str(tmp / "report.json")),
                   env=env, cwd=tmp, check=True, timeout=1200)
    report = json.loads((tmp / "report.json").read_text())
    print(f"{'model':18s} {'mode':5s} {'max rel err':>11s} {'emulated ms':>11s} {'model.so bytes':>14s}")
    for item in manifest:
        name = item["name"]
        for mode in ("fp32", "fp16"):
            outputs = [np.load(item["out_prefix"] + f"{mode}_{i}.npy") for i in range(len(references[name]))]
            error = max(float(np.abs(o.astype(np.float64) - r).max() / np.abs(r).max()) for o, r in zip(outputs, references[name]))
            print(f"{name:18s} {mode:5s} {error:11.2e} {report[name][mode] * 1000:11.2f} {sizes[(name, mode)]:14d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
