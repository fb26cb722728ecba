"""The convolution workbench: convolution and pooling functions, named kernels, layer
arithmetic, and image reading for the lessons taught before any network."""

from cnnlab.conv.arithmetic import LayerRow, LayerTable, format_shape, layer_table, output_size
from cnnlab.conv.filters import (
    Kernel,
    apply_kernel,
    gaussian_matrix,
    get_kernel,
    kernel_names,
    log_matrix,
    parse_kernel,
)
from cnnlab.conv.images import LoadedImage, load_image, save_png
from cnnlab.conv.ops import (
    channel_mix,
    conv2d,
    pad_image,
    pool2d,
    resolve_padding,
    resolve_stride,
)

__all__ = [
    "Kernel",
    "LayerRow",
    "LayerTable",
    "LoadedImage",
    "apply_kernel",
    "channel_mix",
    "conv2d",
    "format_shape",
    "gaussian_matrix",
    "get_kernel",
    "kernel_names",
    "layer_table",
    "load_image",
    "log_matrix",
    "output_size",
    "pad_image",
    "parse_kernel",
    "pool2d",
    "resolve_padding",
    "resolve_stride",
    "save_png",
]
