"""Make the pictures of docs/convolution.md with cnnlab itself.

    python docs/make_convolution_figures.py [--out docs/images] [--skip-training]

Inputs are all offline: scikit-learn's bundled sample photo ``china.jpg`` and a digit "3"
drawn with Pillow's bundled font, prepared MNIST-style. The learned-kernel pictures come
from a ``seed000-cnn`` trained for two epochs on the small offline ``digits`` dataset
(about 20 seconds on a laptop CPU). Pictures are quantised to 256 colours to stay small.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from cnnlab.atomic import write_bytes
from cnnlab.cli import main as cnnlab_main
from cnnlab.conv import apply_kernel, channel_mix, conv2d, get_kernel, pool2d
from cnnlab.data import prepare_digit
from cnnlab.viz.figures import Panel, figure_png, panel_grid_figure
from cnnlab.viz.sheets import filter_sheet, pooling_shift_lesson, write_visualization

HERE = Path(__file__).resolve().parent


def digit_three() -> torch.Tensor:
    """A "3" drawn in Pillow's bundled font, prepared like an MNIST digit (1×28×28)."""
    img = Image.new("L", (220, 260), 255)
    font = ImageFont.load_default(size=220)
    ImageDraw.Draw(img).text((40, 0), "3", font=font, fill=0, stroke_width=10, stroke_fill=0)
    return torch.from_numpy(prepare_digit(img).astype(np.float32) / 255.0)[None]


def photo(max_side: int = 320) -> torch.Tensor:
    """scikit-learn's sample photo, scaled down to ``max_side`` (3×H×W in [0, 1])."""
    from sklearn.datasets import load_sample_image

    img = Image.fromarray(load_sample_image("china.jpg"))
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1).contiguous()


def save(fig: Figure, path: Path, colors: int = 256) -> None:
    """Save a figure as a palette PNG (small, and exact for flat colours)."""
    png = figure_png(fig, dpi=80)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    write_bytes(path, buf.getvalue())
    print(f"{path} ({len(buf.getvalue()) // 1024} KB)")


def padding_stride(digit: torch.Tensor) -> list[Panel]:
    """Panels: one digit under a 5×5 mean with valid / same padding and stride 2 / 5.

    Each result is drawn at its true size in the middle of a 28×28 frame, so the
    shrinking is visible.
    """
    k = get_kernel("mean", size=5).matrix
    cases = [
        ("input", digit[0]),
        ("5×5 valid", conv2d(digit, k, padding="valid")[0]),
        ("5×5 same", conv2d(digit, k, padding="same")[0]),
        ("5×5 same, stride 2", conv2d(digit, k, padding="same", stride=2)[0]),
        ("5×5 valid, stride 5", conv2d(digit, k, padding="valid", stride=5)[0]),
    ]
    panels = []
    for title, arr in cases:
        h, w = arr.shape
        frame = np.full((28, 28), np.nan, np.float32)
        top, left = (28 - h) // 2, (28 - w) // 2
        frame[top : top + h, left : left + w] = arr.numpy()
        panels.append(Panel(title, frame, {"cmap": "gray", "vmin": 0, "vmax": 1}, f"{h}×{w}"))
    return panels


def channels(img: torch.Tensor) -> list[Panel]:
    """Panels: per-channel, channel-summing and 1×1 kernels on an RGB photo."""
    sobel = get_kernel("sobel-x")
    per_channel = apply_kernel(img, sobel)  # 3 channels out
    summed = conv2d(img, np.stack([sobel.matrix] * 3), padding="same", mode="reflect")  # 1 out
    grey = channel_mix(img, [[0.299, 0.587, 0.114]])
    redness = channel_mix(img, [[1.0, -0.5, -0.5]])
    pooled = pool2d(img, 2)
    s = float(per_channel.abs().quantile(0.98))
    signed = {"cmap": "RdBu_r", "vmin": -s, "vmax": s}
    return [
        Panel("RGB input", img.permute(1, 2, 0).numpy(), subtitle="3 channels"),
        Panel("sobel-x per channel", per_channel[0].numpy(), signed, subtitle="red channel of 3"),
        Panel(
            "3×3×3 kernel, summed",
            summed[0].numpy(),
            {**signed, "vmin": -3 * s, "vmax": 3 * s},
            subtitle="1 channel",
        ),  # fmt: skip
        Panel("1×1: grey", grey[0].numpy(), {"cmap": "gray"}, subtitle="0.299R+0.587G+0.114B"),
        Panel(
            "1×1: redness",
            redness[0].numpy(),
            {"cmap": "RdBu_r", "vmin": -0.5, "vmax": 0.5},
            subtitle="R - (G+B)/2",
        ),  # fmt: skip
        Panel(
            "2×2 max pool",
            pooled.permute(1, 2, 0).numpy(),
            subtitle=f"{pooled.shape[1]}×{pooled.shape[2]}, per channel",
        ),  # fmt: skip
    ]


def learned(out: Path) -> None:
    """Train seed000-cnn briefly on the offline digits and draw what it learned."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        rc = cnnlab_main(["train", "--model", "seed000-cnn", "--dataset", "digits",
                          "--epochs", "2", "--seed", "0", "--out", str(run)])  # fmt: skip
        if rc:
            sys.exit(rc)
        from cnnlab.runs import load_run

        r = load_run(run)
        digit = digit_three()
        x = r.preprocess((digit * 255).round().to(torch.uint8)[None])
        vis = write_visualization(r.model, x, Path(tmp) / "vis", max_channels=16)
        for src, name in [("kernels.png", "learned-kernels.png"),
                          ("features-1-0.png", "feature-maps.png")]:  # fmt: skip
            img = Image.open(Path(tmp) / "vis" / src).convert("RGB")
            img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=True)
            write_bytes(out / name, buf.getvalue())
            print(f"{out / name} ({len(buf.getvalue()) // 1024} KB)")
        print(vis.lesson.summary())


def main() -> None:
    """Write every picture of the convolution tutorial."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "images")
    ap.add_argument("--skip-training", action="store_true", help="leave the learned pictures")
    args = ap.parse_args()
    out: Path = args.out
    torch.manual_seed(0)

    digit = digit_three()
    save(filter_sheet(digit, title="a digit under every kernel", panel_inches=1.9),
         out / "conv-kernels-digit.png")  # fmt: skip
    pic = photo()
    names = ["gaussian", "sharpen", "prewitt-vertical", "prewitt-horizontal", "sobel",
             "laplacian-4", "log", "emboss"]  # fmt: skip
    save(filter_sheet(pic, names, title="china.jpg (scikit-learn sample)", panel_inches=2.6),
         out / "conv-kernels-photo.png")  # fmt: skip
    save(panel_grid_figure(padding_stride(digit), ncols=5, panel_inches=1.8,
                           title="5×5 mean: padding and stride set the output size"),
         out / "conv-padding-stride.png")  # fmt: skip
    save(panel_grid_figure(channels(pic), ncols=3, panel_inches=2.6,
                           title="channels: per-channel, summed and 1×1 kernels"),
         out / "conv-channels.png")  # fmt: skip
    lesson = pooling_shift_lesson(digit)
    print(lesson.summary())
    save(lesson.figure, out / "conv-pooling-shift.png")
    if not args.skip_training:
        learned(out)


if __name__ == "__main__":
    main()
