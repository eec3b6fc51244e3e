"""Zoo transformers (small BERT, DistilBERT) compiled with a range on the sequence length.

    .venv/bin/python scripts/flexible_transformers.py [--range 8..64] [--models bert,distilbert] [--batch-range 1..4]

Each model is built as in ``tests/local/zoo.py`` (small configuration) but exported with its
batch and sequence dims dynamic (``dynamic_axes``), then compiled for this machine with the range
on the sequence dim of both inputs and ``verify="gate"`` (onnxruntime at the range's lower bound,
midpoint and upper bound). Prints compile seconds and max abs errors, or the refusal. Not a test.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_neo.local.compiler import compile_model  # noqa: E402
from tests.local import models, zoo  # noqa: E402


#: the zoo's exporter, which run() makes export batch and sequence dims dynamic
_ZOO_EXPORT = zoo.onnx_export


def run(name: str, seq_range: str, batch: int | str = 1, seq: int | None = None) -> dict:
    zoo.onnx_export = functools.partial(_ZOO_EXPORT, dynamic_axes={0: "batch", 1: "seq"})
    built = zoo.ZOO[name].build(True)
    config = {input_name: [batch, seq or seq_range] for input_name in built.inputs}
    with tempfile.TemporaryDirectory() as tmp:
        archive = models.write_archive(Path(tmp), built.files)
        case = models.ModelCase(archive, None, framework="ONNX", data_input_config=config, inputs={},
                                model_file=built.model_file)
        started = time.monotonic()
        try:
            metadata = compile_model(models.make_request(case), str(archive), str(Path(tmp) / "a.tar.gz"),
                                     log=lambda _line: None, verify="gate", profile_seconds=0)
        except Exception as err:  # noqa: BLE001 - reported
            return {"model": name, "refused": f"{type(err).__name__}: {err}"}
        seconds = time.monotonic() - started
    shapes = metadata["verification"]["shapes"]
    return {"model": name, "compile_s": round(seconds, 1), "passed": metadata["verification"]["passed"],
            "max_abs": {str(item["inputs"]["input_ids"]): item["max_abs_diff"] for item in shapes}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--range", default="8..64")
    parser.add_argument("--models", default="bert,distilbert")
    parser.add_argument("--batch-range", default=None, help="a range on the batch instead, the sequence length at 16")
    args = parser.parse_args()
    for name in args.models.split(","):
        if args.batch_range:
            print(run(name, args.range, batch=args.batch_range, seq=16), flush=True)
        else:
            print(run(name, args.range), flush=True)


if __name__ == "__main__":
    main()
