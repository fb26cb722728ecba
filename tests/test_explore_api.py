"""The explorable page's model work and API: the generic layer walk, each unit's
arithmetic against what the layer computed, receptive fields, saliency (checked against
Captum when it is installed) and the 4xx answers of ``/api/explore``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.models.registry import create_model, get_model_spec, list_models
from cnnlab.serve.explain import (
    explain_output,
    explain_unit,
    layer_outputs,
    quantise,
    receptive_field,
    trace_steps,
)
from cnnlab.serve.saliency import gradcam, gradcam_layer, integrated_gradients, saliency_map


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    # BN layers with non-trivial running statistics, so their arithmetic is tested
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, *spec.input_size)
    return model, x


def _unit_of(out: torch.Tensor, rng: np.random.Generator) -> tuple[int, int, int]:
    if out.ndim == 4:
        _, c, h, w = out.shape
        return int(rng.integers(c)), int(rng.integers(h)), int(rng.integers(w))
    return int(rng.integers(out.shape[1])), 0, 0


@pytest.mark.parametrize("name", list_models())
def test_every_unit_kind_reproduces_the_layer_output(name: str) -> None:
    """For every registered model, one unit of every layer: the arithmetic the page shows
    (z, then the activation) equals what the layer computed in the model's own run."""
    model, x = _model(name)
    steps = trace_steps(model, x)
    assert steps, name
    rng = np.random.default_rng(1)
    kinds = set()
    for step in steps:
        c, y, xx = _unit_of(step.output, rng)
        d = explain_unit(steps, step.index, c, y, xx, tuple(x.shape[2:]))
        kinds.add(d["kind"])
        value = step.output[(0, c, y, xx) if step.output.ndim == 4 else (0, c)]
        assert d["value"] == pytest.approx(float(value), rel=1e-4, abs=1e-5)
        if d["kind"] in ("conv", "pool", "dense", "bn"):
            assert d["z"] == pytest.approx(float(value), rel=1e-3, abs=1e-4), step.call.name
        top, left, bottom, right = d["receptive_field"]
        assert 0 <= top <= bottom < x.shape[2] and 0 <= left <= right < x.shape[3]
    assert "conv" in kinds or name == "seed002-mlp"


def test_receptive_fields_of_seed000_cnn() -> None:
    """Conv 3×3 (pad 1) → pool 2 → conv 3×3 → pool 2: 3, 4, 8 and 10 pixels wide."""
    model, x = _model("seed000-cnn")
    steps = trace_steps(model, x)
    hw = (28, 28)
    assert receptive_field(steps, 0, 10, 14, hw) == [9, 13, 11, 15]
    assert receptive_field(steps, 1, 10, 14, hw) == [9, 13, 11, 15]  # ReLU: the same
    assert receptive_field(steps, 2, 5, 7, hw) == [9, 13, 12, 16]
    assert receptive_field(steps, 3, 6, 6, hw) == [9, 9, 16, 16]
    assert receptive_field(steps, 5, 3, 3, hw) == [9, 9, 18, 18]
    assert receptive_field(steps, 0, 0, 0, hw) == [0, 0, 1, 1]  # clipped at the border
    assert receptive_field(steps, 7, 0, 0, hw) == [0, 0, 27, 27]  # dense: everything


def test_residual_blocks_follow_their_main_path() -> None:
    model, x = _model("resnet-mini")
    steps = trace_steps(model, x)
    names = [s.call.name for s in steps]
    # the block's ReLU after `out + shortcut` is credited to the main path's last BN
    relu = names.index("3.relu", names.index("3.bn2"))
    assert steps[relu].source == names.index("3.bn2")
    main = receptive_field(steps, names.index("5.conv2"), 0, 0, (28, 28))
    shortcut = receptive_field(steps, names.index("5.shortcut.0"), 0, 0, (28, 28))
    assert main[0] == 0 and main[2] > shortcut[2] > 0


def test_conv_unit_numbers_by_hand() -> None:
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.randn(1, 2, 7, 7)
    steps = trace_steps(model, x)
    d = explain_unit(steps, 0, 1, 2, 3, (7, 7))
    padded = torch.nn.functional.pad(x[0], (1, 1, 1, 1))
    patch = padded[:, 4:7, 6:9]
    assert np.allclose([ch["patch"] for ch in d["channels"]], patch.numpy(), atol=1e-5)
    assert np.allclose([ch["kernel"] for ch in d["channels"]], conv.weight[1].detach(), atol=1e-5)
    with torch.no_grad():
        expected = float((conv.weight[1] * patch).sum() + conv.bias[1])
    assert d["z"] == pytest.approx(expected, abs=1e-5)
    assert d["activation"]["value"] == pytest.approx(max(0.0, expected), abs=1e-5)
    assert d["receptive_field"] == [3, 5, 5, 6]  # rows 3..5, columns 5..7 clipped to 6


def test_pool_and_dense_units() -> None:
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    x = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    steps = trace_steps(model, x)
    d = explain_unit(steps, 0, 1, 1, 0, (4, 4))
    assert d["window"] == [[24.0, 25.0], [28.0, 29.0]] and d["argmax"] == [1, 1]
    assert d["z"] == 29.0
    dense = explain_unit(steps, 2, 2, 0, 0, (4, 4))
    lin = model[2]
    flat = steps[1].output[0]
    assert dense["z"] == pytest.approx(float(lin(flat)[2]), abs=1e-4)
    assert dense["terms"][0]["where"].startswith("map ")
    assert len(dense["terms"]) == 8 and dense["others_count"] == 0
    with pytest.raises(ValueError, match="outside"):
        explain_unit(steps, 2, 3, 0, 0, (4, 4))


def test_output_explained_margin_adds_up() -> None:
    model, x = _model("seed000-cnn")
    steps = trace_steps(model, x)
    logits = model(x)[0]
    out = explain_output(steps, logits, [str(i) for i in range(10)])
    assert out["probabilities"] == pytest.approx(torch.softmax(logits, 0).tolist(), rel=1e-4)
    top = int(logits.argmax())
    assert out["top"] == top
    why = out["why"]
    parts = sum(t["diff"] for t in why["terms"]) + why["others_sum"] + why["bias_diff"]
    assert parts == pytest.approx(out["margin"], abs=1e-3)
    assert why["total"] == pytest.approx(out["margin"], abs=1e-3)


def test_cifar_net_scale_head_counts_in_the_margin() -> None:
    model, x = _model("cifar-net")
    steps = trace_steps(model, x)
    out = explain_output(steps, model(x)[0], [str(i) for i in range(10)])
    assert out["why"]["scale"] == pytest.approx(1 / 9, rel=1e-3)
    assert out["why"]["total"] == pytest.approx(out["margin"], rel=1e-3, abs=1e-4)


def test_quantise_round_trips_within_one_level() -> None:
    maps = np.random.default_rng(0).normal(size=(3, 5, 6)).astype(np.float32)
    data, lo, hi = quantise(maps)
    levels = np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(3, 5, 6)
    back = np.array(lo)[:, None, None] + levels / 255 * (np.array(hi) - np.array(lo))[:, None, None]
    step = (np.array(hi) - np.array(lo)) / 255
    assert np.all(np.abs(back - maps) <= step[:, None, None] * 0.51 + 1e-4)
    model, x = _model("seed000-cnn")
    layers = layer_outputs(trace_steps(model, x), max_channels=4)
    assert len(base64.b64decode(layers[0]["maps"])) == 4 * 28 * 28
    assert layers[6] == {"id": 6, "flatten": True}
    assert len(layers[-1]["values"]) == 10


def test_gradcam_and_integrated_gradients_match_captum() -> None:
    captum = pytest.importorskip("captum.attr")
    model, x = _model("seed000-cnn")
    name, layer = gradcam_layer(model)
    assert name == "3"
    ours = gradcam(model, x, 4, layer)
    ref = captum.LayerGradCam(model, layer).attribute(x, target=4, relu_attributions=True)
    ref = captum.LayerAttribution.interpolate(ref, tuple(x.shape[2:]), "bilinear")
    assert ours.shape == (28, 28)
    assert torch.allclose(ours, ref[0, 0], atol=1e-5)
    base = torch.zeros_like(x)
    ig = integrated_gradients(model, x, 4, base, steps=20)
    ref_ig = captum.IntegratedGradients(model).attribute(
        x, base, target=4, n_steps=20, method="gausslegendre"
    )
    assert torch.allclose(ig, ref_ig[0], atol=1e-5)
    # completeness: the attributions add up to the logit's change from the baseline
    gap = float(model(x)[0, 4] - model(base)[0, 4])
    assert float(ig.sum()) == pytest.approx(gap, rel=0.05, abs=0.02)


def test_saliency_refuses_what_it_cannot_do() -> None:
    mlp, x = _model("seed002-mlp")
    with pytest.raises(ValueError, match="convolution"):
        saliency_map("gradcam", mlp, x, 0, torch.zeros_like(x))
    with pytest.raises(ValueError, match="saliency must be"):
        saliency_map("lime", mlp, x, 0, torch.zeros_like(x))
    values, about = saliency_map("ig", mlp, x, 0, torch.zeros_like(x))
    assert values.shape == (28, 28) and about["signed"]


# ---------------------------------------------------------------- the HTTP API

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def client(digits_run: Path) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    with TestClient(create_app(digits_run)) as c:
        yield c


def _stroke() -> list[list[int]]:
    img = np.zeros((28, 28), dtype=int)
    img[5:23, 12:16] = 255
    return img.tolist()


JSON = {"content-type": "application/json"}


def test_model_and_page_routes(client) -> None:  # noqa: ANN001
    page = client.get("/explore")
    assert page.status_code == 200 and "/static/explore.js" in page.text
    assert client.get("/static/explore.js").status_code == 200
    assert client.get("/static/explore.css").status_code == 200
    info = client.get("/api/explore/model").json()
    assert [layer["kind"] for layer in info["layers"]][:3] == ["conv", "act", "pool"]
    assert {k["name"] for k in info["kernels"]} >= {"sobel-x", "identity", "laplacian-4"}
    assert "sobel" not in {k["name"] for k in info["kernels"]}
    assert "/api/explore" in client.get("/openapi.json").json()["paths"]


def test_explore_answer_holds_every_layer(client) -> None:  # noqa: ANN001
    r = client.post("/api/explore?saliency=gradcam", content=json.dumps(_stroke()), headers=JSON)
    assert r.status_code == 200, r.text
    d = r.json()
    assert len(d["layers"]) == len(client.get("/api/explore/model").json()["layers"])
    image = np.frombuffer(base64.b64decode(d["image"]["data"]), dtype=np.uint8)
    assert image.reshape(28, 28)[10, 13] == 255 and image.sum() == 255 * 18 * 4
    assert d["saliency"]["method"] == "gradcam" and not d["saliency"]["signed"]
    assert abs(sum(d["output"]["probabilities"]) - 1) < 1e-4
    ig = client.post("/api/explore?saliency=ig", content=json.dumps(_stroke()), headers=JSON)
    assert ig.json()["saliency"]["signed"] is True
    assert (
        client.post("/api/explore", content=json.dumps(_stroke()), headers=JSON).json()["saliency"]
        is None
    )


def test_unit_answer(client) -> None:  # noqa: ANN001
    body = json.dumps({"image": _stroke()})
    r = client.post("/api/explore/unit?layer=0&c=2&y=10&x=13", content=body, headers=JSON)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["kind"] == "conv" and d["receptive_field"] == [9, 12, 11, 14]
    assert d["z"] == pytest.approx(d["value"], abs=1e-4)


@pytest.mark.parametrize(
    ("url", "body", "headers", "status", "words"),
    [
        ("/api/explore?saliency=lime", _stroke(), JSON, 422, "saliency"),
        ("/api/explore", [[1, 2]], JSON, 422, "28 rows"),
        ("/api/explore", b"not an image", {"content-type": "image/png"}, 400, "not an image"),
        ("/api/explore", b"", {"content-type": "image/png"}, 400, "empty"),
        ("/api/explore", b"x", {"content-type": "text/plain"}, 415, "not accepted"),
        ("/api/explore/unit?layer=99&c=0", _stroke(), JSON, 422, "not a layer id"),
        ("/api/explore/unit?layer=0&c=99", _stroke(), JSON, 422, "outside"),
        ("/api/explore/unit?layer=0&c=0&y=40", _stroke(), JSON, 422, "outside"),
        ("/api/explore/unit?layer=-1&c=0", _stroke(), JSON, 422, "layer"),
        ("/api/explore/unit?c=0", _stroke(), JSON, 422, "layer"),
        ("/api/explore/unit?layer=x&c=0", _stroke(), JSON, 422, "layer"),
    ],
)
def test_bad_requests_are_4xx(client, url, body, headers, status, words) -> None:  # noqa: ANN001
    content = body if isinstance(body, bytes) else json.dumps(body)
    r = client.post(url, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert client.get("/api/health").status_code == 200


def test_body_size_limit(digits_run: Path) -> None:
    from fastapi.testclient import TestClient

    from cnnlab.serve import Limits, create_app

    with TestClient(create_app(digits_run, limits=Limits(max_body_bytes=1000))) as c:
        r = c.post("/api/explore", content=json.dumps(_stroke()), headers=JSON)
        assert r.status_code == 413


def test_random_unit_queries_never_fail_the_server(client) -> None:  # noqa: ANN001
    """Any mix of ids, channels and positions, in range or not, numbers or not: 200 or
    422, never a 500, and the server keeps answering."""
    rng = np.random.default_rng(7)
    body = json.dumps({"image": _stroke()})
    choices = ["0", "1", "3", "9", "10", "27", "-1", "1e3", "x", "", "99999999999"]
    statuses = set()
    for _ in range(60):
        query = "&".join(
            f"{key}={rng.choice(choices)}" for key in ("layer", "c", "y", "x") if rng.random() < 0.9
        )
        r = client.post(f"/api/explore/unit?{query}", content=body, headers=JSON)
        statuses.add(r.status_code)
        assert r.status_code in (200, 422), (query, r.text)
        assert isinstance(r.json(), dict)
    assert statuses == {200, 422}


def test_picture_is_drawn_in_the_model_input_pixels() -> None:
    """Receptive fields are in the model's input pixels: a digit padded to 32×32 for
    LeNet-5 is shown padded; an image the model sees as is is shown as is."""
    from cnnlab.serve.explain import picture

    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 4:24, 13:15] = 255
    same_shape, same = picture(image, torch.from_numpy(image / 255.0).float()[None])
    assert same_shape == [1, 28, 28]
    assert base64.b64decode(same) == image.tobytes()
    padded = torch.nn.functional.pad(torch.from_numpy(image / 255.0).float() * 2 - 1, (2, 2, 2, 2))
    shape, data = picture(image, padded[None])
    pixels = np.frombuffer(base64.b64decode(data), np.uint8).reshape(shape)
    assert shape == [1, 32, 32]
    # ink at 1, paper at −1, the zero border mid-grey, over the whole range
    assert pixels[0, 6, 15] == 255 and pixels[0, 6, 4] == 0
    assert pixels[0, 0, 0] in (127, 128)
