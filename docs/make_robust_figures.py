"""Draw docs/images/robust-augment.png: what each of mnist-robust's augmentations does.

    CNNLAB_DATA=... python docs/make_robust_figures.py [--out docs/images]

The first row is twelve MNIST test digits as they are; each following row applies one
setting of the ``digits-robust`` preset alone, at its full strength so that it shows,
then the whole preset twice (the way training sees them); the last row is scikit-learn's
digits of the same classes, prepared MNIST-style, for comparison.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cnnlab.data import load_dataset
from cnnlab.data.augment import AUGMENT_PRESETS, Augment

#: (row label, augmentation): each robust setting alone, made strong enough to see.
ROWS: list[tuple[str, str]] = [
    ("MNIST", "none"),
    ("aspect 0.25", "aspect=0.25"),
    ("elastic 1.5 px", "elastic=1.5"),
    ("thicken", "thicken=1"),
    ("thin", "thin=1"),
    ("coarse scan 9-14 px", "lowres=1,lowres_min=9,lowres_max=14"),
    ("blur sigma 0-1", "blur=1"),
    ("level 0.3, gamma 0.3", "level=0.3,gamma=0.3"),
    ("noise 0.03", "noise=0.03"),
    ("digits-robust", "digits-robust"),
    ("digits-robust", "digits-robust"),
]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "images"))
    args = parser.parse_args()

    mnist = load_dataset("mnist", "test")
    digits = load_dataset("digits", "all")
    classes = [7, 2, 1, 0, 4, 9, 5, 6, 3, 8, 1, 9]
    picks = [int((mnist.labels == k).nonzero()[j]) for j, k in enumerate(classes)]
    x = mnist.images[picks].float() / 255
    theirs = [int((digits.labels == k).nonzero()[j]) for j, k in enumerate(classes)]
    torch.manual_seed(0)
    rows = [(label, Augment.parse(spec)(x)) for label, spec in ROWS]
    rows.append(("scikit-learn digits", digits.images[theirs].float() / 255))

    fig, axes = plt.subplots(len(rows), len(classes), figsize=(len(classes) * 0.9, len(rows)))
    for r, (label, batch) in enumerate(rows):
        for c in range(len(classes)):
            ax = axes[r, c]
            ax.imshow(batch[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    preset = ", ".join(f"{k}={v:g}" for k, v in AUGMENT_PRESETS["digits-robust"].items())
    fig.suptitle(f"digits-robust: {preset}", fontsize=7)
    fig.subplots_adjust(left=0.2, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.05)
    out = Path(args.out) / "robust-augment.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    # Greys and a little text: 64 colours keep it sharp at a fraction of the size.
    from PIL import Image

    with Image.open(out) as img:
        img.convert("RGB").quantize(64).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
