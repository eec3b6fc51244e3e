"""Access to botocore's loaded SageMaker service model (the single source of enums and limits)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.model import ServiceModel, Shape


@lru_cache(maxsize=1)
def sagemaker_model() -> ServiceModel:
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def input_shape(operation: str) -> Shape:
    return sagemaker_model().operation_model(operation).input_shape


def output_shape(operation: str) -> Shape:
    return sagemaker_model().operation_model(operation).output_shape


def enum_of(shape_name: str) -> list[str]:
    return list(sagemaker_model().shape_for(shape_name).enum)


def frameworks() -> list[str]:
    return enum_of("Framework")


def target_devices() -> list[str]:
    return enum_of("TargetDevice")


PAGING_MEMBERS = ("NextToken", "MaxResults")


def list_filters() -> list[str]:
    """ListCompilationJobs' filter and sort members (its input members less the paging ones)."""
    return [m for m in input_shape("ListCompilationJobs").members if m not in PAGING_MEMBERS]
