"""Model registry and the registered networks.

Importing this package registers every model: the tutorials' networks
(:mod:`cnnlab.models.tutorials`) and cnnlab's own, for digits (:mod:`cnnlab.models.modern`)
and for colour photos (:mod:`cnnlab.models.photos`).
"""

from cnnlab.models import modern, photos, tutorials  # noqa: F401  (their decorators register them)
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
