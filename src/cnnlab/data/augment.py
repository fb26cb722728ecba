"""Data augmentation on whole batches of tensors, on the training device.

One :class:`Augment` describes every random change a batch may get: an affine warp
(rotation, scale, shear, translation), an elastic distortion (Simard et al. 2003: a
random displacement field smoothed by a Gaussian), a random crop of a reflect-padded
image (whole-pixel shifts, the usual CIFAR augmentation), a horizontal flip, colour
jitter (brightness, contrast, saturation) and random erasing (Zhong et al. 2017). The affine warp and the elastic field are applied together
by one ``grid_sample`` call, so a batch costs a few tensor operations whatever its size.

The changes real handwriting and photos of it bring have their own settings: thicker
or thinner strokes (a grey dilation or erosion, blended in by a random fraction), a
lower resolution (each image shrunk to a random side by averaging, then enlarged back
bilinearly, like a coarse scan), Gaussian blur of random width, ink level and gamma
(faint or saturated strokes) and Gaussian noise.

Random numbers come from torch's global generator on the batch's device, so a run
seeded with ``--seed`` is repeatable and a resumed run continues the same sequence.

Horizontal flips change a digit's meaning: leave ``flip`` at 0 for digits, use it for
clothing (Fashion-MNIST) and photos.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

__all__ = ["AUGMENT_PRESETS", "Augment"]

#: Named augmentation settings for ``--augment NAME``.
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "digits": {"rotate": 10.0, "scale": 0.1, "shear": 5.0, "translate": 0.1},
    "digits-elastic": {"rotate": 8.0, "scale": 0.08, "translate": 0.08, "elastic": 1.5},
    # handwriting from other pens, scanners and cameras: the digits warp plus an elastic
    # field, stroke thickness, coarse scans, blur, ink level and gamma, and noise
    "digits-robust": {
        "rotate": 10.0,
        "scale": 0.1,
        "shear": 5.0,
        "translate": 0.1,
        "aspect": 0.25,
        "elastic": 1.5,
        "thicken": 0.4,
        "thin": 0.1,
        "lowres": 0.4,
        "lowres_min": 9.0,
        "lowres_max": 14.0,
        "blur": 1.0,
        "level": 0.3,
        "gamma": 0.3,
        "noise": 0.03,
    },
    "fashion": {"translate": 0.1, "flip": 0.5, "erase": 0.5},
    # CIFAR-sized photos: shifts of up to 2 pixels and mirror images (as airbench trains)
    "cifar": {"crop": 2.0, "flip": 0.5},
    # the user's own photos: shifts of up to 1/8 of the side, mirrors, colour jitter and
    # an erased patch now and then
    "photos": {"crop": 0.125, "flip": 0.5, "jitter": 0.2, "erase": 0.25},
}


@dataclass(frozen=True)
class Augment:
    """Random changes applied to each image of a float (N, C, H, W) batch in 0..1.

    Each range is symmetric: an image is rotated by an angle drawn uniformly from
    ``±rotate`` degrees, zoomed by a factor from ``1 ± scale``, sheared by ``±shear``
    degrees and moved by up to ``translate`` times its side along each axis.
    ``aspect`` widens or narrows it by a factor from ``exp(±aspect)`` (another writer's
    broad or narrow hand; scikit-learn's digits were drawn about as wide as high).
    ``elastic`` is the largest displacement in pixels of the elastic distortion (0: off),
    ``elastic_sigma`` the width in pixels of its smoothing. ``flip`` and ``erase`` are
    the probabilities of a horizontal flip and of erasing one random rectangle
    (2–20% of the image, aspect ratio 0.3–3.3) to zero. ``crop`` shifts each image by
    whole pixels, up to ``crop`` along each axis, filling the border by reflection (a
    random crop of the padded image); below 1 it is a fraction of the side. ``jitter``
    scales brightness, contrast and saturation by factors from ``1 ± jitter``.

    ``thicken`` and ``thin`` are the probabilities of drawing the strokes thicker (a
    3×3 grey dilation, i.e. max-pool) or thinner (a 3×3 erosion, min-pool), blended in
    by a random fraction 0..1. ``lowres`` is the probability of a coarse scan: the image
    is shrunk by averaging to a side drawn from ``lowres_min``..``lowres_max`` pixels
    and enlarged back bilinearly. ``blur`` is the largest sigma in pixels of a Gaussian
    blur (each image draws its sigma from 0..``blur``). ``level`` scales the ink by a
    factor from ``1 ± level`` (clipped at white: faint or saturated strokes) and
    ``gamma`` raises each image to a power from ``exp(±gamma)``. ``noise`` is the
    largest standard deviation of added Gaussian noise (each image draws its own).
    """

    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    aspect: float = 0.0
    elastic: float = 0.0
    elastic_sigma: float = 4.0
    flip: float = 0.0
    erase: float = 0.0
    crop: float = 0.0
    jitter: float = 0.0
    thicken: float = 0.0
    thin: float = 0.0
    lowres: float = 0.0
    lowres_min: float = 8.0
    lowres_max: float = 16.0
    blur: float = 0.0
    level: float = 0.0
    gamma: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise CnnlabError(f"augment {f.name} must be a number >= 0, not {value!r}")
        if self.scale >= 1:
            raise CnnlabError(f"augment scale must be below 1, not {self.scale}")
        if self.translate > 0.5:
            raise CnnlabError(f"augment translate must be at most 0.5, not {self.translate}")
        if self.flip > 1 or self.erase > 1:
            raise CnnlabError("augment flip and erase are probabilities, at most 1")
        if self.elastic and self.elastic_sigma <= 0:
            raise CnnlabError("augment elastic_sigma must be positive")
        if self.jitter >= 1:
            raise CnnlabError(f"augment jitter must be below 1, not {self.jitter}")
        for name in ("thicken", "thin", "lowres"):
            if getattr(self, name) > 1:
                raise CnnlabError(f"augment {name} is a probability, at most 1")
        if self.lowres and not 1 <= self.lowres_min <= self.lowres_max:
            raise CnnlabError(
                f"augment lowres sides must satisfy 1 <= lowres_min <= lowres_max, not "
                f"{self.lowres_min:g} and {self.lowres_max:g}"
            )
        if self.level >= 1:
            raise CnnlabError(f"augment level must be below 1, not {self.level}")

    @property
    def active(self) -> bool:
        """Whether this changes anything at all."""
        return any((self.rotate, self.scale, self.shear, self.translate, self.aspect, self.elastic,
                    self.flip, self.erase, self.crop, self.jitter, self.thicken, self.thin,
                    self.lowres, self.blur, self.level, self.gamma, self.noise))  # fmt: skip

    def to_dict(self) -> dict[str, float]:
        """The settings that differ from "no change", for the run's config."""
        defaults = Augment()
        return {k: v for k, v in asdict(self).items() if v != getattr(defaults, k)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Augment:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`CnnlabError`."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CnnlabError(
                f"unknown augmentation {unknown[0]!r} (known: {', '.join(sorted(names))})"
            )
        try:
            return cls(**{k: float(v) for k, v in d.items()})
        except (TypeError, ValueError):
            raise CnnlabError(f"augmentation values must be numbers, got {d}") from None

    @classmethod
    def parse(cls, text: str) -> Augment:
        """Read ``--augment``: a preset name, ``key=value`` pairs, or a preset then pairs.

        ``"digits"``, ``"rotate=10,scale=0.1"`` and ``"digits,elastic=2"`` are all valid.
        """
        values: dict[str, float] = {}
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                preset = AUGMENT_PRESETS.get(part)
                if preset is None:
                    raise CnnlabError(
                        f"unknown augmentation preset {part!r} "
                        f"(presets: {', '.join(AUGMENT_PRESETS)}; or key=value pairs)"
                    )
                values.update(preset)
                continue
            try:
                values[key] = float(value)
            except ValueError:
                raise CnnlabError(f"{key}: expected a number, got {value!r}") from None
        return cls.from_dict(values)

    # ------------------------------------------------------------------------ apply
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a float batch (N, C, H, W); a new tensor, ``x`` is left alone."""
        if not self.active or x.shape[0] == 0:
            return x
        if self.rotate or self.scale or self.shear or self.translate or self.aspect or self.elastic:
            x = self._warp(x)
        # The pen, then the scanner or camera: stroke width, resolution, focus, exposure
        # and sensor noise, in that order.
        if self.thicken or self.thin:
            x = self._thickness(x)
        if self.lowres:
            x = self._lowres(x)
        if self.blur:
            x = self._blur(x)
        if self.level or self.gamma:
            x = self._levels(x)
        if self.noise:
            x = self._noise(x)
        if self.crop:
            x = self._crop(x)
        if self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < self.flip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.jitter:
            x = self._jitter(x)
        if self.erase:
            x = self._erase(x)
        return x

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """Shift each image by whole pixels (reflection fills the border): two gathers."""
        n, c, h, w = x.shape
        pad_h = int(self.crop if self.crop >= 1 else round(self.crop * h))
        pad_w = int(self.crop if self.crop >= 1 else round(self.crop * w))
        pad_h, pad_w = min(pad_h, h - 1), min(pad_w, w - 1)
        if pad_h < 1 and pad_w < 1:
            return x
        dev = x.device
        padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        dy = torch.randint(0, 2 * pad_h + 1, (n,), device=dev)
        dx = torch.randint(0, 2 * pad_w + 1, (n,), device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)).view(n, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev)).view(n, 1, 1, w)
        x = padded.gather(2, rows.expand(n, c, h, w + 2 * pad_w))
        return x.gather(3, cols.expand(n, c, h, w))

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and (for colour) saturation, each scaled by 1 ± jitter."""
        n, c = x.shape[:2]
        dev = x.device
        factors = 1 + self._uniform(3 * n, self.jitter, dev).view(3, n, 1, 1, 1).to(x.dtype)
        x = x * factors[0]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factors[1] + mean
        if c == 3:
            grey = (
                x * torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=x.dtype).view(1, 3, 1, 1)
            ).sum(dim=1, keepdim=True)
            x = (x - grey) * factors[2] + grey
        return x.clamp(0.0, 1.0)

    def _thickness(self, x: torch.Tensor) -> torch.Tensor:
        """Thicker or thinner strokes: a 3×3 dilation or erosion blended in by 0..1."""
        n = x.shape[0]
        dev = x.device
        u, amount = torch.rand(2, n, device=dev, dtype=x.dtype).view(2, n, 1, 1, 1)
        # One draw decides both, so an image is never thickened and thinned at once.
        thicker = u < self.thicken
        thinner = (u >= self.thicken) & (u < self.thicken + self.thin)
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        target = torch.where(thicker, dilated, torch.where(thinner, eroded, x))
        return x + amount * (target - x)

    def _lowres(self, x: torch.Tensor) -> torch.Tensor:
        """A coarse scan: shrink by averaging to a random side, enlarge back bilinearly.

        Images are grouped by the side they drew, so the loop runs once per distinct
        side (at most ``lowres_max - lowres_min + 1`` times), never once per image.
        """
        n, _, h, w = x.shape
        dev = x.device
        lo, hi = int(round(self.lowres_min)), int(round(self.lowres_max))
        chosen = torch.rand(n, device=dev) < self.lowres
        sides = torch.randint(lo, hi + 1, (n,), device=dev)
        out = x.clone()
        longest = max(h, w)
        for side in sorted(set(sides[chosen].tolist())):
            if side >= longest:
                continue  # no coarser than the image itself
            idx = (chosen & (sides == side)).nonzero().squeeze(1)
            small_h = max(1, round(h * side / longest))
            small_w = max(1, round(w * side / longest))
            small = F.interpolate(x[idx], size=(small_h, small_w), mode="area")
            out[idx] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        return out.clamp(0.0, 1.0)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """A separable Gaussian blur with each image's own sigma in 0..``blur``: one
        grouped convolution per axis for the whole batch."""
        n, c, h, w = x.shape
        dev = x.device
        sigma = (torch.rand(n, device=dev, dtype=x.dtype) * self.blur).clamp_min(1e-3)
        radius = max(1, math.ceil(3 * self.blur))
        t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        g = torch.exp(-(t**2) / (2 * sigma[:, None] ** 2))
        g = (g / g.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, k)
        k = 2 * radius + 1
        y = x.reshape(1, n * c, h, w)
        # Replicated borders: a photo's edge is not dark, a digit's border is already 0.
        y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"),
                     g.view(n * c, 1, 1, k), groups=n * c)  # fmt: skip
        y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"),
                     g.view(n * c, 1, k, 1), groups=n * c)  # fmt: skip
        return y.view(n, c, h, w)

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Ink level (a factor from 1 ± level, clipped at white) then gamma (exp(±gamma))."""
        n = x.shape[0]
        dev = x.device
        factor = 1 + self._uniform(n, self.level, dev).to(x.dtype).view(n, 1, 1, 1)
        power = torch.exp(self._uniform(n, self.gamma, dev)).to(x.dtype).view(n, 1, 1, 1)
        return (x * factor).clamp(0.0, 1.0) ** power

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian noise, each image with its own standard deviation in 0..``noise``."""
        n = x.shape[0]
        std = (torch.rand(n, device=x.device, dtype=x.dtype) * self.noise).view(n, 1, 1, 1)
        return (x + torch.randn_like(x) * std).clamp(0.0, 1.0)

    def _uniform(self, n: int, bound: float, device: torch.device) -> torch.Tensor:
        return (torch.rand(n, device=device) * 2 - 1) * bound

    def _warp(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        angle = torch.deg2rad(self._uniform(n, self.rotate, dev))
        shear = torch.deg2rad(self._uniform(n, self.shear, dev))
        zoom = 1 + self._uniform(n, self.scale, dev)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output -> input coordinates (affine_grid's convention): rotate, shear, then zoom.
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0] = cos / zoom
        theta[:, 0, 1] = (cos * torch.tan(shear) - sin) / zoom
        theta[:, 1, 0] = sin / zoom
        theta[:, 1, 1] = (sin * torch.tan(shear) + cos) / zoom
        theta[:, :, 2] = self._uniform(2 * n, 2 * self.translate, dev).view(n, 2)
        if self.aspect:
            # Drawn after the others, so settings without it keep their random sequence.
            theta[:, 0, :2] /= torch.exp(self._uniform(n, self.aspect, dev))[:, None]
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
        if self.elastic:
            grid = grid + self._elastic_field(n, h, w, dev)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _elastic_field(self, n: int, h: int, w: int, dev: torch.device) -> torch.Tensor:
        """A smooth random displacement, at most ``elastic`` pixels, as grid offsets."""
        field = torch.rand(n * 2, 1, h, w, device=dev) * 2 - 1
        radius = max(1, int(round(3 * self.elastic_sigma)))
        t = torch.arange(-radius, radius + 1, device=dev, dtype=field.dtype)
        g = torch.exp(-(t**2) / (2 * self.elastic_sigma**2))
        g = g / g.sum()
        # The separable Gaussian with reflected borders as two small matrix products:
        # several times faster than 1-channel convolutions over a large batch.
        field = _smoothing_matrix(g, h) @ field @ _smoothing_matrix(g, w).T
        field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        field = field.view(n, 2, h, w) * self.elastic
        scale = torch.tensor([2.0 / w, 2.0 / h], device=dev, dtype=field.dtype)
        return field.permute(0, 2, 3, 1) * scale

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        area = (0.02 + torch.rand(n, device=dev) * 0.18) * h * w
        ratio = torch.exp(torch.empty(n, device=dev).uniform_(math.log(0.3), math.log(3.3)))
        eh = (area * ratio).sqrt().round().clamp(1, h)
        ew = (area / ratio).sqrt().round().clamp(1, w)
        top = (torch.rand(n, device=dev) * (h - eh + 1)).floor()
        left = (torch.rand(n, device=dev) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        inside = (
            (rows >= top.view(n, 1, 1))
            & (rows < (top + eh).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1))
            & (cols < (left + ew).view(n, 1, 1))
        )
        chosen = torch.rand(n, device=dev) < self.erase
        mask = inside & chosen.view(n, 1, 1)
        return x.masked_fill(mask.unsqueeze(1), 0.0)


def _smoothing_matrix(g: torch.Tensor, size: int) -> torch.Tensor:
    """The (size, size) matrix of a 1-D convolution with kernel ``g`` over a signal
    padded by reflection (``F.pad(mode="reflect")`` then ``conv1d``)."""
    radius = (len(g) - 1) // 2
    if radius >= size:
        raise CnnlabError(
            f"augment elastic_sigma is too wide for {size}-pixel images (at most {size / 3:.1f})"
        )
    i = torch.arange(size, device=g.device)
    j = i[:, None] + torch.arange(-radius, radius + 1, device=g.device)
    j = torch.where(j < 0, -j, j)
    j = torch.where(j >= size, 2 * (size - 1) - j, j)
    m = torch.zeros(size, size, device=g.device, dtype=g.dtype)
    return m.index_put_((i[:, None].expand_as(j), j), g.expand_as(j), accumulate=True)
