"""What the reference page (AWS CLI ``describe-compilation-job``) lists, for the tests to check against."""

from __future__ import annotations

# Every output field on the page, nested members as dotted paths.
PAGE_OUTPUT_FIELDS = (
    "CompilationJobName",
    "CompilationJobArn",
    "CompilationJobStatus",
    "CompilationStartTime",
    "CompilationEndTime",
    "StoppingCondition.MaxRuntimeInSeconds",
    "StoppingCondition.MaxWaitTimeInSeconds",
    "InferenceImage",
    "ModelPackageVersionArn",
    "CreationTime",
    "LastModifiedTime",
    "FailureReason",
    "ModelArtifacts.S3ModelArtifacts",
    "ModelDigests.ArtifactDigest",
    "RoleArn",
    "InputConfig.S3Uri",
    "InputConfig.DataInputConfig",
    "InputConfig.Framework",
    "InputConfig.FrameworkVersion",
    "OutputConfig.S3OutputLocation",
    "OutputConfig.TargetDevice",
    "OutputConfig.TargetPlatform.Os",
    "OutputConfig.TargetPlatform.Arch",
    "OutputConfig.TargetPlatform.Accelerator",
    "OutputConfig.CompilerOptions",
    "OutputConfig.KmsKeyId",
    "VpcConfig.SecurityGroupIds",
    "VpcConfig.Subnets",
)
PAGE_TIMESTAMPS = ("CompilationStartTime", "CompilationEndTime", "CreationTime", "LastModifiedTime")
# The page's options (the global ones are tested separately).
PAGE_OPTIONS = ("--compilation-job-name", "--cli-input-json", "--cli-input-yaml", "--generate-cli-skeleton")


def leaf_paths(value, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf (a list counts as a leaf)."""
    if isinstance(value, dict):
        paths: set[str] = set()
        for key, child in value.items():
            paths |= leaf_paths(child, f"{prefix}{key}.")
        return paths
    return {prefix.rstrip(".")}


def assert_api_order(payload: dict, shape) -> None:
    """Keys in the order of the botocore shape's members, at every level of nesting."""
    present = [name for name in shape.members if name in payload]
    assert list(payload) == present, (list(payload), present)
    for name, child in payload.items():
        member = shape.members[name]
        if member.type_name == "structure" and isinstance(child, dict):
            assert_api_order(child, member)


def assert_iso_utc(text: str) -> None:
    import datetime as dt

    parsed = dt.datetime.fromisoformat(text)
    assert parsed.utcoffset() == dt.timedelta(0), text
    assert "T" in text
