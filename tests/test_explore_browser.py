"""The explorable page in a real browser (headless Chromium through Playwright): draw a
digit, click units of each layer type and compare the page's numbers with the model's
own, switch the saliency overlays, run the convolution lesson, and a colour run with an
uploaded photo. The browser and the trained digit run are :mod:`tests.test_serve_browser`'s;
the colour run is :func:`tests.conftest.photo_run`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import PHOTO_COLOURS
from tests.test_serve_browser import (  # noqa: F401 (fixtures)
    ONE,
    TrainedRun,
    browser,
    browser_run,
    chromium_path,
    stroke,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def open_explore(browser: Any, base_url: str) -> Iterator[Any]:  # noqa: F811
    """The explorable page, loaded; fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.goto(base_url + "/explore")
    p.wait_for_selector("body[data-model='loaded']", timeout=30_000)
    yield p
    context.close()
    assert not errors, errors


def redrawn(page: Any, at_least: int) -> None:
    page.wait_for_function(
        "(n) => document.body.dataset.settled === '1' && "
        "Number(document.body.dataset.redraws || 0) >= n",
        arg=at_least,
        timeout=30_000,
    )


def redraws(page: Any) -> int:
    return int(page.evaluate("() => Number(document.body.dataset.redraws || 0)"))


def click_unit(page: Any, selector: str) -> dict[str, Any]:
    """Click ``selector`` (a map tile, a bar chart or an output row) in its middle and
    return the unit panel's layer, unit and numbers once they are shown."""
    page.evaluate("() => { document.body.dataset.unitSettled = '0'; }")
    page.locator(selector).click()
    page.wait_for_function("() => document.body.dataset.unitSettled === '1'", timeout=30_000)
    unit = page.locator("#unit")
    shown = {
        "layer": int(unit.get_attribute("data-layer")),
        "unit": [int(v) for v in unit.get_attribute("data-unit").split(",")],
        "kind": unit.get_attribute("data-kind"),
        "value": float(page.locator("#unit-value").inner_text()),
        "math": page.locator("#unit-math").inner_text(),
        "rf": [int(v) for v in page.locator("#unit-rf").get_attribute("data-rf").split(",")],
    }
    if page.locator("#unit-z").count():
        shown["z"] = float(page.locator("#unit-z").inner_text())
    return shown


def model_inputs(run_path: Path, page: Any) -> tuple[Any, torch.Tensor, list[Any]]:
    """The run, the model's input for the picture the page holds, and each leaf layer's
    (input, output), recomputed here."""
    from cnnlab.models.trace import trace_layers
    from cnnlab.runs import load_run

    run = load_run(run_path)
    image = np.array(page.evaluate("() => window.cnnlabExplore.preparedImage()"), np.uint8)
    image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    x = run.predictor.inputs(torch.from_numpy(np.ascontiguousarray(image))[None]).contiguous()
    calls = [c for c in trace_layers(run.model, x) if isinstance(c.output, torch.Tensor)]
    return run, x, calls


@pytest.fixture(scope="module")
def base_url(browser_run: TrainedRun) -> Iterator[str]:  # noqa: F811
    from cnnlab.serve.app import create_app
    from cnnlab.serve.server import background_server

    with background_server(create_app(browser_run.path)) as url:
        yield url


@pytest.fixture(scope="module")
def drawn(browser: Any, base_url: str) -> Iterator[Any]:  # noqa: F811
    """One page with a drawn 1, shared by the tests that only read and click."""
    gen = open_explore(browser, base_url)
    page = next(gen)
    stroke(page, ONE)
    redrawn(page, 1)
    yield page
    next(gen, None)


def test_overview_shows_every_layer(drawn: Any, browser_run: TrainedRun) -> None:  # noqa: F811
    page = drawn
    cols = page.locator(".col[data-layer]")
    assert cols.count() == 10  # seed000-cnn: conv relu pool conv relu pool flatten fc relu fc
    kinds = [cols.nth(i).get_attribute("data-kind") for i in range(10)]
    assert kinds == ["conv", "act", "pool", "conv", "act", "pool", "other", "dense", "act", "dense"]
    assert page.locator(".col[data-layer='0'] canvas.tile").count() == 16
    assert page.locator(".col[data-layer='5'] canvas.tile").count() == 32
    assert page.locator(".col[data-layer='7'] canvas.bars").count() == 1
    assert page.locator(".col[data-layer='9'] .out-row").count() == 10
    # a map tile holds the layer's real output: its brightest pixel is the channel's max
    run, x, calls = model_inputs(browser_run.path, page)
    out = calls[0].output[0]
    channel = int(out.amax(dim=(1, 2)).argmax())
    y, xx = divmod(int(out[channel].argmax()), out.shape[2])
    pixel = page.evaluate(
        "([c, y, x]) => Array.from(document.querySelectorAll(\".col[data-layer='0'] canvas.tile\")"
        "[c].getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))",
        [channel, y, xx],
    )
    assert pixel == [253, 231, 37]  # viridis' top colour
    best = run.classes[int(run.model(x).argmax())]
    assert page.locator("#prediction").inner_text().strip() == best


def test_conv_unit_arithmetic(drawn: Any, browser_run: TrainedRun) -> None:  # noqa: F811
    page = drawn
    _, _, calls = model_inputs(browser_run.path, page)
    for layer in (0, 3):
        shown = click_unit(page, f".col[data-layer='{layer}'] canvas.tile >> nth=2")
        assert shown["layer"] == layer and shown["kind"] == "conv"
        c, y, x = shown["unit"]
        conv = calls[layer].module
        assert isinstance(conv, nn.Conv2d)
        padded = nn.functional.pad(calls[layer].input[0], (1, 1, 1, 1))
        patch = padded[:, y : y + 3, x : x + 3]
        with torch.no_grad():
            z = float((conv.weight[c] * patch).sum() + conv.bias[c])
        assert shown["z"] == pytest.approx(z, rel=1e-4, abs=1e-5)
        assert shown["value"] == pytest.approx(float(calls[layer].output[0, c, y, x]), abs=1e-4)
        relu = float(calls[layer + 1].output[0, c, y, x])
        assert float(page.locator("#unit-activation").inner_text()) == pytest.approx(relu, abs=1e-4)
        # the receptive field: 3 pixels for conv 1, 8 for conv 2 (through the 2×2 pooling)
        span = 3 if layer == 0 else 8
        top = y - 1 if layer == 0 else 2 * (y - 1) - 1
        left = x - 1 if layer == 0 else 2 * (x - 1) - 1
        expected = [max(0, top), max(0, left), min(27, top + span - 1), min(27, left + span - 1)]
        assert shown["rf"] == expected
        # the kernels drawn are the layer's weights
        first = page.locator("#unit-parts .channel").first.locator("table.grid-nums").first
        cells = [float(t) for t in first.locator("td").all_inner_texts()]
        channel = int(
            page.locator("#unit-parts .ch-title").first.inner_text().split(":")[0].split()[-1]
        )
        assert cells == pytest.approx(conv.weight[c, channel].flatten().tolist(), abs=6e-4)
        assert "+ b = " in shown["math"]


def test_pool_dense_and_output_units(drawn: Any, browser_run: TrainedRun) -> None:  # noqa: F811
    page = drawn
    run, x, calls = model_inputs(browser_run.path, page)
    pool = click_unit(page, ".col[data-layer='2'] canvas.tile >> nth=5")
    c, y, xx = pool["unit"]
    window = calls[2].input[0, c, 2 * y : 2 * y + 2, 2 * xx : 2 * xx + 2]
    assert pool["kind"] == "pool" and pool["z"] == pytest.approx(float(window.max()), abs=1e-5)
    assert "max of the window" in pool["math"]
    assert pool["rf"] == [max(0, 2 * y - 1), max(0, 2 * xx - 1), 2 * y + 2, 2 * xx + 2]
    dense = click_unit(page, ".col[data-layer='7'] canvas.bars")
    (unit,) = dense["unit"]
    lin = calls[7].module
    with torch.no_grad():
        z = float(lin(calls[7].input)[0, unit])
    assert dense["kind"] == "dense" and dense["z"] == pytest.approx(z, rel=1e-4, abs=1e-4)
    assert dense["rf"] == [0, 0, 27, 27]
    assert page.locator("#unit-parts table.terms tr").count() == 13  # head + 12 largest
    best = int(run.model(x).argmax())
    out = click_unit(page, f".col[data-layer='9'] .out-row >> nth={best}")
    logits = run.model(x)[0].detach()
    assert out["unit"] == [best]
    assert out["z"] == pytest.approx(float(logits[best]), rel=1e-4, abs=1e-4)
    # the softmax table: each class's logit and probability as the model computes them
    probs = torch.softmax(logits, 0)
    rows = page.locator("#softmax tbody tr")
    assert rows.count() == len(run.classes)
    for i in range(len(run.classes)):
        logit = float(rows.nth(i).locator(".logit").inner_text())
        prob = float(rows.nth(i).locator(".prob").inner_text())
        assert logit == pytest.approx(float(logits[i]), rel=1e-4, abs=1e-4)
        assert prob == pytest.approx(float(probs[i]), rel=1e-3, abs=1e-8)
    assert page.locator("#softmax tr.best").get_attribute("data-class") == run.classes[best]
    why = page.locator("#why").inner_text()
    assert f"Why “{run.classes[best]}”" in why and "runner-up" in why


def test_saliency_overlays(drawn: Any, browser_run: TrainedRun) -> None:  # noqa: F811
    from cnnlab.serve.saliency import gradcam, integrated_gradients

    page = drawn
    run, x, _ = model_inputs(browser_run.path, page)
    target = int(run.model(x).argmax())

    def seen() -> list[int]:
        return page.evaluate(
            "() => Array.from(document.getElementById('seen').getContext('2d')"
            ".getImageData(0, 0, 280, 280).data)"
        )

    plain = seen()
    n = redraws(page)
    page.check("input[name=saliency][value=gradcam]")
    redrawn(page, n + 1)
    assert page.locator("body").get_attribute("data-saliency") == "gradcam"
    note = page.locator("#saliency-note").inner_text()
    cam = gradcam(run.model, x, target, run.model[3])
    assert "Grad-CAM on layer 3" in note
    assert float(note.rsplit("… ", 1)[1].rstrip(").")) == pytest.approx(float(cam.max()), rel=1e-3)
    with_cam = seen()
    assert with_cam != plain
    page.check("input[name=saliency][value=ig]")
    redrawn(page, n + 2)
    assert page.locator("body").get_attribute("data-saliency") == "ig"
    note = page.locator("#saliency-note").inner_text()
    black = run.predictor.inputs(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).contiguous()
    ig = integrated_gradients(run.model, x, target, black).sum(dim=0)
    lo, hi = note.rsplit("(", 1)[1].rstrip(").").split(" … ")
    assert float(lo) == pytest.approx(float(ig.min()), rel=1e-3, abs=1e-6)
    assert float(hi) == pytest.approx(float(ig.max()), rel=1e-3, abs=1e-6)
    assert seen() not in (plain, with_cam)
    page.check("input[name=saliency][value=none]")
    redrawn(page, n + 3)
    assert page.locator("#saliency-note").inner_text() == ""
    assert seen() == plain


def test_convolution_lesson(drawn: Any) -> None:
    page = drawn
    image = np.array(page.evaluate("() => window.cnnlabExplore.preparedImage()"), np.float32)
    grey = torch.from_numpy(image / 255)[None, None]

    def check(kernel: np.ndarray, stride: int, padding: int) -> None:
        size = (28 + 2 * padding - kernel.shape[0]) // stride + 1
        text = page.locator("#lesson-size").inner_text()
        assert f"(28 + 2·{padding} − {kernel.shape[0]}) / {stride} + 1" in text
        assert text.endswith(f"→ {size}×{size}")
        assert page.locator("#lesson-out-size").inner_text() == f"{size}×{size}"
        out = nn.functional.conv2d(
            grey, torch.from_numpy(kernel)[None, None], stride=stride, padding=padding
        )[0, 0]
        y0, x0 = (
            int(v) for v in page.locator("#lesson-values").get_attribute("data-origin").split(",")
        )
        shown = [
            [float(v) for v in row.locator("td").all_inner_texts()]
            for row in page.locator("#lesson-values tr").all()
        ]
        rows, cols = len(shown), len(shown[0])
        assert rows == min(5, size) and cols == min(5, size)
        expected = out[y0 : y0 + rows, x0 : x0 + cols].numpy()
        assert np.allclose(shown, expected, atol=6e-4)
        assert np.abs(expected).max() > 0.1  # the window shows the strongest response

    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    page.select_option("#lesson-kernel", "sobel-x")
    page.select_option("#lesson-padding", "0")
    page.select_option("#lesson-stride", "1")
    check(sobel, 1, 0)
    page.select_option("#lesson-stride", "2")
    page.select_option("#lesson-padding", "1")
    check(sobel, 2, 1)
    page.select_option("#lesson-stride", "3")
    page.select_option("#lesson-padding", "0")
    assert "rounded down" in page.locator("#lesson-size").inner_text()
    check(sobel, 3, 0)
    # editing a weight makes the kernel custom and changes the output
    page.select_option("#lesson-stride", "1")
    page.locator("#lesson-grid input.cell >> nth=4").fill("3")
    assert page.locator("#lesson-kernel").input_value() == "custom"
    edited = sobel.copy()
    edited[1, 1] = 3
    check(edited, 1, 0)
    from cnnlab.conv.filters import get_kernel

    page.select_option("#lesson-kernel", "gaussian")
    check(get_kernel("gaussian").matrix.astype(np.float32), 1, 0)


# ---------------------------------------------------------------- a colour run


@pytest.fixture(scope="module")
def photo_url(photo_run: Path) -> Iterator[str]:
    if chromium_path() is None:
        pytest.skip("no Chromium at /usr/bin/chromium")
    from cnnlab.serve.app import create_app
    from cnnlab.serve.server import background_server

    with background_server(create_app(photo_run)) as url:
        yield url


def test_colour_run_with_an_uploaded_photo(
    browser: Any,  # noqa: F811
    photo_url: str,
    photo_run: Path,
    tmp_path: Path,
) -> None:
    gen = open_explore(browser, photo_url)
    page = next(gen)
    assert page.locator("body").get_attribute("data-kind") == "photos"
    assert not page.locator("#pad").is_visible()
    rng = np.random.default_rng(3)
    noise = rng.integers(-20, 21, (60, 80, 3))
    pixels = np.clip(np.array(PHOTO_COLOURS["sky"]) + noise, 0, 255).astype(np.uint8)
    path = tmp_path / "sky.png"
    Image.fromarray(pixels).save(path)
    page.set_input_files("#upload", str(path))
    redrawn(page, 1)
    assert page.locator("#prediction").inner_text().strip() == "sky"
    assert "sky.png" in page.locator("#confidence").inner_text()
    # the input column shows the colour picture the model received
    centre = page.evaluate(
        "() => Array.from(document.querySelector('.input-tile').getContext('2d')"
        ".getImageData(8, 8, 1, 1).data.slice(0, 3))"
    )
    assert centre[2] > 150 and centre[0] < 120
    shown = click_unit(page, ".col[data-layer='0'] canvas.tile >> nth=1")
    _, _, calls = model_inputs(photo_run, page)
    c, y, x = shown["unit"]
    conv = calls[0].module
    assert conv.in_channels == 3
    patch = nn.functional.pad(calls[0].input[0], (1, 1, 1, 1))[:, y : y + 3, x : x + 3]
    with torch.no_grad():
        z = float((conv.weight[c] * patch).sum() + conv.bias[c])
    assert shown["z"] == pytest.approx(z, rel=1e-4, abs=1e-5)
    assert page.locator("#unit-parts .channel").count() == 3  # red, green and blue kernels
    page.check("input[name=saliency][value=gradcam]")
    redrawn(page, 2)
    assert page.locator("body").get_attribute("data-saliency") == "gradcam"
    next(gen, None)


# ---------------------------------------------------------------- batch norm and residuals


@pytest.fixture(scope="module")
def resnet_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``resnet-mini`` (batch norm, residual blocks) trained a few steps on ``digits``."""
    if chromium_path() is None:
        pytest.skip("no Chromium at /usr/bin/chromium")
    from cnnlab.config import TrainConfig
    from cnnlab.runs import train_run
    from cnnlab.serve.app import create_app
    from cnnlab.serve.server import background_server

    out = tmp_path_factory.mktemp("explore-resnet") / "run"
    config = TrainConfig(model="resnet-mini", dataset="digits", steps=4, batch_size=16)
    train_run(config, out, progress=False)
    with background_server(create_app(out)) as url:
        yield url, out


def test_batch_norm_unit_of_a_residual_network(
    browser: Any,  # noqa: F811
    resnet_url: tuple[str, Path],
) -> None:
    url, run_path = resnet_url
    gen = open_explore(browser, url)
    page = next(gen)
    stroke(page, ONE)
    redrawn(page, 1)
    kinds = page.locator(".col[data-layer]").evaluate_all("(cs) => cs.map((c) => c.dataset.type)")
    assert kinds[:3] == ["Conv2d", "BatchNorm2d", "ReLU"] and "Identity" in kinds
    shown = click_unit(page, ".col[data-layer='1'] canvas.tile >> nth=3")
    _, _, calls = model_inputs(run_path, page)
    bn = calls[1].module
    assert isinstance(bn, nn.BatchNorm2d)
    c, y, x = shown["unit"]
    value = float(calls[1].input[0, c, y, x])
    mean, var = float(bn.running_mean[c]), float(bn.running_var[c])
    gamma, beta = float(bn.weight.detach()[c]), float(bn.bias.detach()[c])
    z = (value - mean) / (var + bn.eps) ** 0.5 * gamma + beta
    assert shown["kind"] == "bn" and shown["z"] == pytest.approx(z, rel=1e-4, abs=1e-5)
    assert "(x − μ) / √(σ² + ε) · γ + β" in shown["math"]
    # a unit of the last block's second convolution sees most of the input
    names = page.locator(".col[data-layer] .col-head b").all_inner_texts()
    last = names.index("5.conv2")
    wide = click_unit(page, f".col[data-layer='{last}'] canvas.tile >> nth=0")
    top, left, bottom, right = wide["rf"]
    assert bottom - top >= 14 and right - left >= 14
    next(gen, None)
