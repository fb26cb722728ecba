"""The augmentations for other writers, scanners and cameras: stroke thickness, width,
coarse scans, blur, ink level and gamma, noise; each checked on its values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab import CnnlabError
from cnnlab.data.augment import AUGMENT_PRESETS, Augment

ROBUST_FIELDS = ("aspect", "thicken", "thin", "lowres", "blur", "level", "gamma", "noise")


def strokes(n: int = 32, size: int = 28) -> torch.Tensor:
    """A batch of images holding a 2-pixel wide ring and a bar: thin strokes like a digit's."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - 10.0) ** 2 + (xx - 14.0) ** 2).sqrt()
    img = ((r >= 4) & (r < 6)).float()
    img[14:24, 13:15] = 1.0
    return img.expand(n, 1, size, size).clone()


def ink(x: torch.Tensor) -> torch.Tensor:
    """Per image: how many pixels hold ink (above half)."""
    return (x > 0.5).sum(dim=(1, 2, 3))


def max_gradient(x: torch.Tensor) -> torch.Tensor:
    """Per image: the steepest step between horizontal or vertical neighbours."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().amax(dim=(1, 2, 3))
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().amax(dim=(1, 2, 3))
    return torch.maximum(dx, dy)


@pytest.mark.parametrize("name", ROBUST_FIELDS)
def test_zero_settings_are_the_identity(name: str) -> None:
    x = strokes(4)
    off = Augment(**{name: 0.0})
    assert not off.active and off(x) is x
    # A setting that draws nothing for an image leaves it exactly as it was.
    if name in ("thicken", "thin", "lowres"):
        torch.manual_seed(0)
        assert torch.equal(Augment(**{name: 1e-12})(x), x)


def test_thicken_grows_and_thin_shrinks_the_ink() -> None:
    torch.manual_seed(0)
    x = strokes(64)
    thick = Augment(thicken=1.0)(x)
    thin = Augment(thin=1.0)(x)
    assert (thick >= x - 1e-6).all() and (thin <= x + 1e-6).all()
    # Blended in by a fraction 0..1: every image changes, each by its own amount, up to
    # the full 3×3 dilation or erosion.
    mass, dilated = x.sum(dim=(1, 2, 3)), F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    fraction = (thick.sum(dim=(1, 2, 3)) - mass) / (dilated.sum(dim=(1, 2, 3)) - mass)
    assert fraction.min() >= 0 and fraction.max() <= 1 + 1e-6
    assert fraction.min() < 0.1 and fraction.max() > 0.9 and fraction.std() > 0.2
    assert ink(thick).max() == ink(dilated)[0] and ink(thick).min() == ink(x)[0]
    fraction = (mass - thin.sum(dim=(1, 2, 3))) / (mass - eroded.sum(dim=(1, 2, 3)))
    assert fraction.min() < 0.1 and fraction.max() > 0.9 and fraction.max() <= 1 + 1e-6
    # With both, each image is made thicker or thinner, never both.
    both = Augment(thicken=0.5, thin=0.5)(x)
    grew = (both > x + 1e-6).flatten(1).any(1)
    shrank = (both < x - 1e-6).flatten(1).any(1)
    assert not (grew & shrank).any() and grew.any() and shrank.any()


def test_blur_lowers_the_steepest_edge_and_keeps_the_ink() -> None:
    torch.manual_seed(0)
    x = strokes(64)
    out = Augment(blur=1.5)(x)
    assert (max_gradient(out) < max_gradient(x) - 0.05).float().mean() > 0.6
    assert max_gradient(out).min() < 0.3  # the widest blur (sigma near 1.5) is soft
    # A normalised kernel keeps the mass (the strokes are far from the border).
    assert torch.allclose(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=1e-4)
    # Each image draws its own sigma: the edges come out of different steepness.
    assert max_gradient(out).std() > 0.02
    # A photo's edges are not darkened: a flat image stays flat.
    grey = torch.full((3, 3, 9, 9), 0.7)
    assert torch.allclose(Augment(blur=2.0)(grey), grey, atol=1e-6)


def test_lowres_equals_a_shrink_by_averaging_and_a_bilinear_enlargement() -> None:
    torch.manual_seed(0)
    x = torch.rand(48, 1, 28, 28)
    aug = Augment(lowres=1.0, lowres_min=8, lowres_max=16)
    out = aug(x)
    sides = set()
    for i in range(len(x)):
        matches = [
            s
            for s in range(8, 17)
            if torch.allclose(
                out[i : i + 1],
                F.interpolate(
                    F.interpolate(x[i : i + 1], size=(s, s), mode="area"),
                    size=(28, 28),
                    mode="bilinear",
                    align_corners=False,
                ).clamp(0, 1),
                atol=1e-6,
            )
        ]
        assert matches, f"image {i} is not a down/up resample of itself"
        sides.add(matches[0])
    assert len(sides) >= 6  # the side is drawn per image, over the whole range
    # Half the images chosen: the others come back unchanged.
    half = Augment(lowres=0.5)(x)
    same = (half == x).flatten(1).all(1)
    assert 10 < int(same.sum()) < 38


def test_level_and_gamma_change_the_ink_within_their_ranges() -> None:
    torch.manual_seed(0)
    x = torch.full((256, 1, 4, 4), 0.5)
    x[:, :, 0, 0] = 0.0
    level = Augment(level=0.4)(x)[:, 0, 1, 1] / 0.5
    assert level.min() >= 0.6 - 1e-6 and level.max() <= 1.4 + 1e-6 and level.std() > 0.1
    assert (Augment(level=0.9)(torch.ones(8, 1, 2, 2)) <= 1).all()  # clipped at white
    power = torch.log(Augment(gamma=0.5)(x)[:, 0, 1, 1]) / torch.log(torch.tensor(0.5))
    assert power.min() >= torch.exp(torch.tensor(-0.5)) - 1e-5
    assert power.max() <= torch.exp(torch.tensor(0.5)) + 1e-5 and power.std() > 0.1
    assert (Augment(level=0.4, gamma=0.5)(x)[:, :, 0, 0] == 0).all()  # no ink stays no ink


def test_noise_has_each_image_its_own_spread() -> None:
    torch.manual_seed(0)
    x = torch.full((128, 1, 28, 28), 0.5)
    spread = (Augment(noise=0.1)(x) - x).std(dim=(1, 2, 3))
    assert spread.max() <= 0.1 * 1.1 and spread.max() > 0.08 and spread.min() < 0.02
    noisy = Augment(noise=0.5)(torch.zeros(4, 1, 8, 8))
    assert noisy.min() == 0 and noisy.max() > 0.3 and noisy.max() <= 1  # clipped to 0..1


def test_aspect_changes_the_width_not_the_height() -> None:
    torch.manual_seed(0)
    x = torch.zeros(128, 1, 28, 28)
    x[:, :, 6:22, 10:18] = 1.0  # 16 high, 8 wide
    out = Augment(aspect=0.3)(x)
    rows = (out.sum(dim=3) > 0.5).sum(dim=(1, 2)).float()
    width = out.sum(dim=(1, 2, 3)) / 16  # the mass per row
    assert (rows - 16).abs().max() <= 1
    assert width.min() >= 8 * 0.74 - 0.1 and width.max() <= 8 * 1.35 + 0.1
    assert width.min() < 6.5 and width.max() > 10


def test_the_robust_preset_is_repeatable_under_a_seed_and_batched() -> None:
    x = strokes(16)
    aug = Augment.parse("digits-robust")
    assert aug.to_dict() == AUGMENT_PRESETS["digits-robust"]
    for name in ROBUST_FIELDS:
        assert getattr(aug, name) > 0, name
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    b = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, aug(x))
    assert a.min() >= 0 and a.max() <= 1 and torch.isfinite(a).all()
    # Parsed like the others, on top of a preset.
    assert Augment.parse("digits,blur=1.2,lowres=0.5").to_dict() == {
        **AUGMENT_PRESETS["digits"],
        "blur": 1.2,
        "lowres": 0.5,
    }


def test_settings_without_the_new_fields_keep_their_random_sequence() -> None:
    # Runs made before these settings existed resume on the same random numbers.
    x = strokes(8)
    torch.manual_seed(1)
    old = Augment.parse("digits,elastic=1.5")(x)
    after_old = torch.rand(3)
    torch.manual_seed(1)
    again = Augment.parse("digits,elastic=1.5,noise=0")(x)
    assert torch.equal(old, again) and torch.equal(after_old, torch.rand(3))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("thicken=1.5", "thicken is a probability"),
        ("lowres=2", "lowres is a probability"),
        ("lowres=0.5,lowres_min=12,lowres_max=9", "lowres_min <= lowres_max"),
        ("level=1", "level must be below 1"),
        ("blur=-1", "blur must be a number >= 0"),
        ("noise=x", "noise: expected a number"),
    ],
)
def test_bad_robust_settings_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(CnnlabError, match=message):
        Augment.parse(spec)


def test_the_elastic_smoothing_matrix_is_the_reflect_padded_convolution() -> None:
    from cnnlab.data.augment import _smoothing_matrix

    torch.manual_seed(0)
    field = torch.rand(6, 1, 28, 20)
    r = 9
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / 18)
    g = g / g.sum()
    conv = F.conv2d(F.pad(field, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    conv = F.conv2d(F.pad(conv, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))
    product = _smoothing_matrix(g, 28) @ field @ _smoothing_matrix(g, 20).T
    assert torch.allclose(product, conv, atol=1e-6)
    with pytest.raises(CnnlabError, match="elastic_sigma is too wide"):
        Augment(elastic=1, elastic_sigma=4)(torch.rand(2, 1, 10, 10))


def test_the_robust_preset_is_a_bounded_number_of_tensor_ops() -> None:
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
    aug = Augment.parse("digits-robust")
    calls = []
    for n in (64, 2048):  # the coarse scans loop once per side drawn, not per image
        with CountCalls() as counter:
            aug(x[:n])
        calls.append(counter.calls)
    assert calls[1] - calls[0] <= 10 * 6 and calls[1] < 400, calls
