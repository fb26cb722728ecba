"""cnnlab: convolutional networks from a single kernel to a deployed digit recogniser."""

from cnnlab.errors import CnnlabError
from cnnlab.models import count_parameters, create_model, get_model_spec, list_models

__version__ = "0.1.0"

__all__ = [
    "CnnlabError",
    "__version__",
    "count_parameters",
    "create_model",
    "get_model_spec",
    "list_models",
]
