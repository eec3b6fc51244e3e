"""Valid CreateCompilationJob requests for tests."""

from __future__ import annotations

import copy

ROLE_ARN = "arn:aws:iam::123456789012:role/NeoRole"


def valid_request(name: str = "resnet-c5", **overrides) -> dict:
    request = {
        "CompilationJobName": name,
        "RoleArn": ROLE_ARN,
        "InputConfig": {
            "S3Uri": "s3://models/resnet/model.tar.gz",
            "Framework": "ONNX",
            "DataInputConfig": '{"data": [1, 3, 224, 224]}',
        },
        "OutputConfig": {"S3OutputLocation": "s3://models/compiled", "TargetDevice": "ml_c5"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }
    request.update(copy.deepcopy(overrides))
    return request
