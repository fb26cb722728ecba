"""Model registry and the registered networks."""

from cnnlab.models.registry import (
    ModelSpec,
    count_parameters,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)

__all__ = [
    "ModelSpec",
    "count_parameters",
    "create_model",
    "get_model_spec",
    "list_models",
    "register_model",
]
