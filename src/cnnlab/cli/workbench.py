"""The convolution workbench: ``filter``, ``filters``, ``layers`` and ``visualize``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.cli.config_flags import add_config_flags
from cnnlab.cli.options import add_data_dir
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.conv.images import LoadedImage


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's sub-commands to ``sub``."""
    p = sub.add_parser(
        "filter",
        help="convolve an image with one kernel and save the result as PNG",
        description="Convolve IMAGE with a named kernel (or a matrix such as "
        "'1,0,-1;2,0,-2;1,0,-1') and save the result. Signed responses (edges) are drawn "
        "red for positive, blue for negative.",
    )
    p.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, …)")
    p.add_argument(
        "-k", "--kernel", required=True, help="kernel name (e.g. sobel-x, gaussian) or matrix"
    )
    p.add_argument("--size", type=int, help="size of mean, gaussian and log kernels (odd)")
    p.add_argument("--sigma", type=float, help="sigma of gaussian and log kernels")
    p.add_argument("--stride", default="1", help="N or ROWS,COLS (default 1)")
    p.add_argument(
        "--padding",
        default="same",
        help="same, valid, N, ROWS,COLS or TOP,BOTTOM,LEFT,RIGHT (default same)",
    )
    p.add_argument(
        "--border",
        default="reflect",
        choices=("zeros", "reflect", "replicate"),
        help="what the padding holds (default reflect)",
    )
    _image_options(p)
    p.add_argument("-o", "--out", required=True, metavar="PNG", help="output PNG file")
    p.set_defaults(func=_filter)

    p = sub.add_parser(
        "filters",
        help="one labelled sheet: an image under every classical kernel",
    )
    p.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, …)")
    p.add_argument("--kernels", help="comma-separated kernel names (default: all)")
    _image_options(p)
    p.add_argument("-o", "--out", required=True, metavar="PNG", help="output PNG file")
    p.set_defaults(func=_filters)

    p = sub.add_parser(
        "layers",
        help="each layer's kernel, stride, padding, output shape, receptive field, parameters",
    )
    p.add_argument("model", metavar="MODEL", help="registered model id (see 'cnnlab models')")
    p.add_argument(
        "--input-size", metavar="C,H,W", help="input size (default: the model's declared one)"
    )
    add_config_flags(p, only={"model_args"})
    p.set_defaults(func=_layers)

    p = sub.add_parser(
        "visualize",
        help="a trained run's learned kernels, feature maps and the pooling-shift lesson",
    )
    p.add_argument("run", metavar="RUN", help="run folder written by 'cnnlab train'")
    p.add_argument(
        "--image",
        help="picture to look at, prepared as the run's data was (a digit MNIST-style, a "
        "photo decoded and resized like the training folder); default: a test image of "
        "the run's data (--index)",
    )
    p.add_argument(
        "--index",
        type=int,
        default=0,
        help="which test image when no --image is given (default 0, the first)",
    )
    add_data_dir(p)
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--max-channels", type=int, default=64, help="channels per feature-map sheet (default 64)"
    )
    p.set_defaults(func=_visualize)


def _image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--color",
        default="auto",
        choices=("auto", "grey", "rgb"),
        help="read the image as grey or RGB (default: as stored)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="scale larger images down to this many pixels on the long side; 0 keeps "
        "full size (default 1024)",
    )


def _ints(text: str, what: str, counts: tuple[int, ...]) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise CnnlabError(f"{what} {text!r} must be whole numbers separated by commas") from None
    if len(values) not in counts:
        raise CnnlabError(f"{what} {text!r} needs {' or '.join(map(str, counts))} numbers")
    return values


def _load(args: argparse.Namespace) -> LoadedImage:
    from cnnlab.conv.images import load_image

    if args.max_side < 0:
        raise CnnlabError(f"--max-side {args.max_side} cannot be negative")
    return load_image(args.image, color=args.color, max_side=args.max_side or None)


def _filter(args: argparse.Namespace) -> int:
    from cnnlab.conv.arithmetic import format_shape
    from cnnlab.conv.filters import apply_kernel, display_rgb, parse_kernel
    from cnnlab.conv.images import save_png
    from cnnlab.conv.ops import resolve_padding, resolve_stride

    kernel = parse_kernel(args.kernel, size=args.size, sigma=args.sigma)
    stride = _ints(args.stride, "stride", (1, 2))
    stride_arg = stride[0] if len(stride) == 1 else (stride[0], stride[1])
    resolve_stride(stride_arg, name=kernel.name)
    padding = args.padding
    if padding.lower() not in ("same", "valid"):
        padding = _ints(padding, "padding", (1, 2, 4))
        padding = padding[0] if len(padding) == 1 else padding
    pads = resolve_padding(padding, kernel.size, name=kernel.name)
    image = _load(args)
    result = apply_kernel(
        image.pixels, kernel, stride=stride_arg, padding=padding, mode=args.border
    )
    save_png(args.out, display_rgb(result, kernel))
    c, h, w = result.shape if result.ndim == 3 else (1, *result.shape)
    print(
        f"{kernel.name} {kernel.size[0]}×{kernel.size[1]}, stride {args.stride}, padding "
        f"{args.padding} (top {pads[0]}, bottom {pads[1]}, left {pads[2]}, right {pads[3]}), "
        f"border {args.border}"
    )
    print(f"{image.describe()} → {format_shape((c, h, w))} ({kernel.display}) → {args.out}")
    return 0


def _filters(args: argparse.Namespace) -> int:
    from cnnlab.conv.filters import get_kernel
    from cnnlab.viz.figures import save_figure
    from cnnlab.viz.sheets import filter_sheet

    kernels = None
    if args.kernels:
        kernels = [get_kernel(n) for n in args.kernels.split(",") if n.strip()]
    image = _load(args)
    title = f"{Path(args.image).name}: {image.describe()}"
    save_figure(filter_sheet(image.pixels, kernels, title=title), args.out)
    count = len(kernels) if kernels is not None else 15
    print(f"{image.describe()} under {count} kernels → {args.out}")
    return 0


def _layers(args: argparse.Namespace) -> int:
    from cnnlab.conv.arithmetic import format_shape, layer_table

    size = None
    if args.input_size:
        c, h, w = _ints(args.input_size, "--input-size", (3,))
        size = (c, h, w)
    kwargs = args.model_args
    table = layer_table(args.model, size, **kwargs)
    print(f"{table.model}: input {format_shape(table.input_shape)}")
    print(table.format())
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from cnnlab.runs import load_run
    from cnnlab.viz.sheets import write_visualization

    if args.max_channels < 1:
        raise CnnlabError(f"--max-channels {args.max_channels} must be at least 1")
    if args.image is not None and not Path(args.image).is_file():
        raise CnnlabError(f"image {args.image!r} does not exist or is not a file")
    run = load_run(args.run)
    if args.image is not None:
        image = run.prepare([args.image])[0]
        source = args.image
    else:
        test = run.split("test", args.data_dir)
        if not 0 <= args.index < len(test):
            raise CnnlabError(
                f"--index {args.index} is not a test image of {test.name} "
                f"(it has {len(test)}: 0 to {len(test) - 1})"
            )
        image = test.images[args.index]
        label = test.classes[int(test.labels[args.index])]
        source = f"{test.name} test image {args.index} ({label})"
    x = run.preprocess(image[None])
    result = write_visualization(
        run.model,
        x,
        args.out,
        lesson_image=image.float() / 255.0,
        max_channels=args.max_channels,
    )
    print(f"input: {source}, {'×'.join(str(n) for n in image.shape)} (channels×height×width)")
    for f in result.files:
        print(f)
    print(result.lesson.summary())
    return 0
