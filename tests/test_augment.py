"""Batch augmentation: each transform does what it says, on whole batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab import CnnlabError
from cnnlab.data.augment import AUGMENT_PRESETS, Augment
from cnnlab.data.loader import Preprocess


def square(n: int = 16, size: int = 28) -> torch.Tensor:
    """A batch of images holding one bright 6×6 square left of the centre."""
    x = torch.zeros(n, 1, size, size)
    x[:, :, 11:17, 6:12] = 1.0
    return x


def centroid(x: torch.Tensor) -> torch.Tensor:
    """(N, 2) centre of mass (row, column) of each image."""
    h, w = x.shape[-2:]
    mass = x.sum(dim=(1, 2, 3)).clamp_min(1e-8)
    rows = (x.sum(dim=(1, 3)) * torch.arange(h)).sum(1) / mass
    cols = (x.sum(dim=(1, 2)) * torch.arange(w)).sum(1) / mass
    return torch.stack([rows, cols], 1)


def test_no_augmentation_is_the_identity() -> None:
    x = square()
    assert not Augment().active
    assert Augment()(x) is x


def test_zero_ranges_leave_the_image_unchanged() -> None:
    # An affine warp with every range 0 is the identity (up to interpolation).
    x = square()
    aug = Augment(rotate=1e-9)
    assert torch.allclose(aug(x), x, atol=1e-5)


def test_translate_moves_content_within_its_range() -> None:
    torch.manual_seed(0)
    x = square(256)
    moved = centroid(Augment(translate=0.1)(x)) - centroid(x)
    assert moved.abs().max() <= 0.1 * 28 + 0.5
    assert moved.abs().max() > 1.0  # it does move things
    assert moved[:, 0].std() > 0.5 and moved[:, 1].std() > 0.5  # independently per axis


def test_rotation_turns_a_bar() -> None:
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 29, 29)
    x[:, :, 4:25, 13:16] = 1.0  # a vertical bar through the centre
    rotated = Augment(rotate=45)(x)
    # The fraction of the bar still inside its original column drops as it turns.
    kept = (rotated * x).sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert kept.min() < 0.5 and kept.max() > 0.5
    # Mass is (nearly) conserved: rotation about the centre keeps the bar inside.
    assert torch.allclose(rotated.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.1)


def test_scale_changes_size_within_range() -> None:
    torch.manual_seed(0)
    x = torch.zeros(128, 1, 28, 28)
    x[:, :, 9:19, 9:19] = 1.0
    area = Augment(scale=0.2)(x).sum(dim=(1, 2, 3)) / 100
    assert area.min() >= 0.8**2 - 0.05 and area.max() <= 1.2**2 + 0.05
    assert area.max() - area.min() > 0.3


def test_flip_mirrors_about_half_the_images() -> None:
    torch.manual_seed(0)
    x = square(400)
    out = Augment(flip=0.5)(x)
    flipped = torch.isclose(out, x.flip(-1)).flatten(1).all(1)
    same = torch.isclose(out, x).flatten(1).all(1)
    assert (flipped | same).all()
    assert 150 < int(flipped.sum()) < 250


def test_erase_zeroes_one_rectangle() -> None:
    torch.manual_seed(0)
    x = torch.ones(200, 1, 28, 28)
    out = Augment(erase=1.0)(x)
    erased = (out == 0).float().sum(dim=(1, 2, 3)) / (28 * 28)
    assert (erased >= 0.01).all() and (erased <= 0.25).all()
    # The erased cells of each image form one rectangle.
    for img in out[:20, 0]:
        rows = (img == 0).any(1).nonzero().flatten()
        cols = (img == 0).any(0).nonzero().flatten()
        box = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box == 0).all()


def test_elastic_displacement_is_bounded_and_smooth() -> None:
    torch.manual_seed(0)
    aug = Augment(elastic=2.0, elastic_sigma=4.0)
    field = aug._elastic_field(8, 28, 28, torch.device("cpu"))
    pixels = field * torch.tensor([28 / 2, 28 / 2])
    assert pixels.abs().max() <= 2.0 + 1e-5
    assert pixels.abs().max() > 1.0
    # Smooth: neighbouring displacements differ far less than the largest one.
    step = (pixels[:, 1:] - pixels[:, :-1]).abs().max()
    assert step < 0.5


def test_augmentation_follows_the_global_seed() -> None:
    x = square(8)
    aug = Augment.parse("digits,elastic=1.5,erase=0.5")
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x))


def test_parse_presets_and_pairs() -> None:
    assert Augment.parse("digits").to_dict() == AUGMENT_PRESETS["digits"]
    a = Augment.parse("digits,elastic=2")
    assert a.rotate == 10 and a.elastic == 2
    assert Augment.parse("rotate=5, translate=0.05").to_dict() == {
        "rotate": 5.0,
        "translate": 0.05,
    }
    assert not Augment.parse("none").active
    assert Augment.from_dict(a.to_dict()) == a


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rotate=abc", "rotate: expected a number"),
        ("twirl=3", "unknown augmentation 'twirl'"),
        ("sparkles", "unknown augmentation preset 'sparkles'"),
        ("scale=1.5", "scale must be below 1"),
        ("flip=2", "probabilities"),
        ("rotate=-3", "rotate must be a number >= 0"),
        ("translate=0.9", "translate must be at most 0.5"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(CnnlabError, match=message):
        Augment.parse(spec)


def test_preprocess_augments_before_normalising() -> None:
    img = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    pre = Preprocess(mean=0.5, std=0.5)
    out = pre(img, Augment(translate=0.2))
    # An all-black image stays all-black: borders filled before normalisation.
    assert torch.allclose(out, torch.full_like(out, -1.0))
    # White images are moved, and the borders they leave are black (-1), not 0.
    torch.manual_seed(0)
    moved = pre(torch.full((16, 1, 28, 28), 255, dtype=torch.uint8), Augment(translate=0.2))
    assert (moved == -1.0).any() and (moved == 1.0).any()
    assert moved.min() >= -1.0 and moved.max() <= 1.0


def test_augmenting_a_large_batch_is_a_few_tensor_ops() -> None:
    from torch.overrides import TorchFunctionMode

    class CountCalls(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            self.calls += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    x = torch.rand(2048, 1, 28, 28)
    aug = Augment.parse("digits,elastic=1.5,erase=0.5,flip=0.5")
    calls = []
    for n in (8, 2048):  # the same few calls whatever the batch size: no per-image work
        with CountCalls() as counter:
            out = aug(x[:n])
        calls.append(counter.calls)
    assert calls[0] == calls[1] < 200, calls
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not math.isclose(float(F.mse_loss(out, x)), 0.0)


def test_crop_shifts_by_whole_pixels_within_its_range() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 12, 12)
    out = Augment(crop=2)(x)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    shifts = set()
    for i in range(len(x)):
        # every output is exactly one 12×12 window of the reflect-padded image
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 12, dx : dx + 12])
        ]
        assert found, f"image {i} is not a crop of its padded self"
        shifts.add(found[0])
    assert len(shifts) > 10  # shifts are drawn per image, over the whole range
    # below 1, crop is a fraction of the side: 0.125 of 16 pixels is at most 2
    assert Augment(crop=0.125)._crop(torch.rand(2, 1, 16, 16)).shape == (2, 1, 16, 16)


def test_jitter_changes_brightness_contrast_and_saturation_within_range() -> None:
    torch.manual_seed(0)
    grey = torch.full((256, 3, 8, 8), 0.5)
    out = Augment(jitter=0.2)(grey)
    # a flat grey image only changes brightness: by a factor in 1 ± 0.2, the same for
    # every pixel and channel
    factor = out[:, 0, 0, 0] / 0.5
    assert factor.min() >= 0.8 - 1e-6 and factor.max() <= 1.2 + 1e-6
    assert factor.std() > 0.05
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))
    # a colour image changes saturation too: its channels move apart or together
    colour = torch.zeros(256, 3, 8, 8)
    colour[:, 0] = 0.6
    colour[:, 1] = 0.4
    colour[:, 2] = 0.4
    spread = (lambda y: y[:, 0] - y[:, 1])(Augment(jitter=0.2)(colour))[:, 0, 0] / 0.2
    assert spread.min() < 0.95 and spread.max() > 1.05
    assert Augment(jitter=0.9)(torch.rand(8, 3, 4, 4)).min() >= 0  # values stay in 0..1


def test_photo_presets() -> None:
    assert Augment.parse("cifar").to_dict() == {"crop": 2.0, "flip": 0.5}
    photos = Augment.parse("photos")
    assert photos.jitter and photos.erase and photos.flip and photos.crop
    with pytest.raises(CnnlabError, match="jitter must be below 1"):
        Augment.parse("jitter=1.5")


def test_per_channel_normalisation() -> None:
    from cnnlab.data.loader import channel_statistics

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 6, 6), dtype=torch.uint8, generator=gen)
    images[:, 0] //= 2  # a darker red channel
    mean, std = channel_statistics(images, chunk=7)
    x = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=x.dtype), x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(
        torch.tensor(std, dtype=x.dtype), x.std(dim=(0, 2, 3), correction=0), atol=1e-6
    )
    pre = Preprocess((3, 6, 6), mean=mean, std=std)
    out = pre(images)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(CnnlabError, match="per-channel"):
        Preprocess((1, 6, 6), mean=(0.5, 0.5, 0.5))(images[:, :1])


def test_channel_statistics_read_bounded_chunks() -> None:
    from cnnlab.data.loader import channel_statistics

    class Recording:
        """A uint8 batch that records how many images each read asks for."""

        def __init__(self, x: torch.Tensor) -> None:
            self.x, self.shape, self.reads = x, x.shape, []

        def dim(self) -> int:
            return self.x.dim()

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, index: slice) -> torch.Tensor:
            part = self.x[index]
            self.reads.append(len(part))
            return part

    # 300 images of 3×170×170: a float64 copy of the whole would be 208 MB
    images = Recording(torch.randint(0, 256, (300, 3, 170, 170), dtype=torch.uint8))
    mean, _ = channel_statistics(images)
    assert max(images.reads) * 3 * 170 * 170 <= 1 << 23  # at most 64 MB as float64
    assert sum(images.reads) == 300
    assert mean == pytest.approx((images.x.double() / 255).mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
