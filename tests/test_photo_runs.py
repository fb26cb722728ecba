"""A colour photo run (a folder of images) downstream of training: ``cnnlab predict``, the
web API and ``cnnlab export`` prepare pictures like the run's images and name its classes."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.runs import Run, load_run
from tests.conftest import PHOTO_COLOURS

RED, BLUE = PHOTO_COLOURS["apples"], PHOTO_COLOURS["sky"]


def photo(colour: tuple[int, int, int], fmt: str, size: tuple[int, int] = (48, 30)) -> bytes:
    """A noisy flat-colour photo, wider than high and larger than the run's 16×16 images."""
    rng = np.random.default_rng(sum(colour))
    noise = rng.integers(-20, 21, (size[1], size[0], 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def run(photo_run: Path) -> Run:
    return load_run(photo_run)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """A red JPEG and a blue PNG written as files."""
    red, blue = tmp_path / "red.jpg", tmp_path / "blue.png"
    red.write_bytes(photo(RED, "JPEG"))
    blue.write_bytes(photo(BLUE, "PNG"))
    return [red, blue]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- cnnlab predict --------------------------------------------------------------------


def test_the_run_prepares_photos_in_colour_at_its_size(run: Run, photos: list[Path]) -> None:
    assert not run.preparation.digits and run.preparation.shape == (3, 16, 16)
    batch = run.prepare(photos)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.uint8
    # pad keeps the aspect ratio: the 48×30 photo fills the width, black bands above and below
    red = batch[0, :, 8].float().mean(1)
    assert red[0] > 180 and red[2] < 80
    assert int(batch[0, :, 0].max()) == 0


def test_predict_names_the_classes_of_photos(
    capsys, photo_run: Path, run: Run, photos: list[Path]
) -> None:
    code, out, err = run_cli(capsys, "predict", str(photo_run), *map(str, photos))
    assert code == 0, err
    lines = out.strip().splitlines()
    probs = run.predict(run.prepare(photos))
    for line, path, p in zip(lines, photos, probs, strict=True):
        best = int(p.argmax())
        assert line.startswith(f"{path}: {run.classes[best]} {100 * float(p[best]):.1f}%")
        assert "blank" not in line
        assert set(run.classes) <= set(line.replace("%", "").split())
    assert lines[0].split()[1] == "apples" and lines[1].split()[1] == "sky"


def test_predict_json_for_photos(capsys, photo_run: Path, run: Run, photos: list[Path]) -> None:
    code, out, err = run_cli(capsys, "predict", str(photo_run), *map(str, photos), "--json")
    assert code == 0, err
    answers = [json.loads(line) for line in out.strip().splitlines()]
    probs = run.predict(run.prepare(photos))
    assert [a["prediction"] for a in answers] == ["apples", "sky"]
    for answer, path, p in zip(answers, photos, probs, strict=True):
        assert answer["file"] == str(path) and "blank" not in answer
        assert list(answer["probabilities"]) == list(run.classes)
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        got = np.array(list(answer["probabilities"].values()))
        np.testing.assert_allclose(got, p.numpy(), atol=1e-5)


def test_predict_on_a_truncated_photo_is_one_line_exit_2(
    capsys, photo_run: Path, photos: list[Path], tmp_path: Path
) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photos[0].read_bytes()[:200])
    code, out, err = run_cli(capsys, "predict", str(photo_run), str(photos[1]), str(cut))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cut.jpg" in err and "Traceback" not in err


# ---- the web API -----------------------------------------------------------------------

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(run: Run) -> Iterator[TestClient]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with TestClient(create_app(run)) as c:
            yield c


def test_model_description_says_how_photos_are_prepared(client: TestClient) -> None:
    info = client.get("/api/model").json()
    assert info["classes"] == list(PHOTO_COLOURS)
    assert info["preparation"] == {"kind": "photos", "shape": [3, 16, 16], "resize": "pad"}
    assert info["input_shape"] == [3, 16, 16]
    assert "16×16×3" in info["json_input"]


def test_digit_run_description_says_digits(digits_run: Path) -> None:
    with TestClient(create_app(digits_run, warm_up=False)) as c:
        info = c.get("/api/model").json()
    assert info["preparation"]["kind"] == "digits" and info["input_shape"] == [1, 28, 28]


@pytest.mark.parametrize(
    ("fmt", "ctype", "colour", "expected"),
    [("PNG", "image/png", BLUE, "sky"), ("JPEG", "image/jpeg", RED, "apples")],
)
def test_uploaded_photo_is_classified_by_class_name(
    client: TestClient, run: Run, fmt: str, ctype: str, colour: tuple, expected: str
) -> None:
    body = photo(colour, fmt)
    prepared = run.prepare([body])
    probs = run.predict(prepared)[0]
    for res in (
        client.post("/api/predict", content=body, headers={"Content-Type": ctype}),
        client.post("/api/predict", files={"file": (f"x.{fmt.lower()}", body, ctype)}),
    ):
        assert res.status_code == 200, res.text
        data = res.json()
        assert data["blank"] is False and data["prediction"] == expected
        assert list(data["probabilities"]) == list(run.classes)
        assert sum(data["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        got = np.array(list(data["probabilities"].values()))
        np.testing.assert_allclose(got, probs.numpy(), atol=1e-5)
        assert data["top"][0] == {"class": expected, "probability": data["confidence"]}
        # the input is what the model received, as H×W×[r, g, b]
        seen = np.array(data["input"], dtype=np.uint8)
        assert seen.shape == (16, 16, 3)
        assert np.array_equal(seen, prepared[0].permute(1, 2, 0).numpy())


def test_feature_maps_of_a_colour_photo(client: TestClient, run: Run) -> None:
    from cnnlab.viz.features import feature_maps

    body = photo(RED, "PNG")
    res = client.post(
        "/api/predict?features=1", content=body, headers={"Content-Type": "image/png"}
    )
    assert res.status_code == 200, res.text
    layers = res.json()["feature_maps"]
    assert [layer["layer"] for layer in layers] == ["0", "3"]
    assert layers[0]["shape"] == [16, 28, 28] and len(layers[0]["maps"]) == 16
    assert all(url.startswith("data:image/png;base64,") for url in layers[0]["maps"])
    expected = feature_maps(run.model, run.predictor.inputs(run.prepare([body])))[0].output[0]
    lo, hi = layers[0]["ranges"][0]
    assert lo == pytest.approx(float(expected[0].min()), abs=1e-3)
    assert hi == pytest.approx(float(expected[0].max()), abs=1e-3)


def test_json_colour_array_is_used_as_is(client: TestClient, run: Run) -> None:
    prepared = run.prepare([photo(BLUE, "PNG")])
    pixels = prepared[0].permute(1, 2, 0).tolist()
    for body in (pixels, {"image": pixels}):
        res = client.post("/api/predict", json=body)
        assert res.status_code == 200, res.text
        got = np.array(list(res.json()["probabilities"].values()))
        np.testing.assert_allclose(got, run.predict(prepared)[0].numpy(), atol=1e-5)
    grey = client.post("/api/predict", json=[[0] * 16] * 16)
    assert grey.status_code == 422 and "[red, green, blue]" in grey.json()["detail"]
    small = client.post("/api/predict", json=[[[0, 0, 0]] * 28] * 28)
    assert small.status_code == 422 and "16×16×3" in small.json()["detail"]
    far = client.post("/api/predict", json=[[[0, 0, 300]] * 16] * 16)
    assert far.status_code == 422 and "0..255" in far.json()["detail"]


def test_bad_uploads_get_4xx_and_the_server_goes_on(client: TestClient) -> None:
    jpeg = photo(RED, "JPEG")
    cases = [
        (jpeg[:150], "image/jpeg", 400),
        (b"not a photo at all", "image/png", 400),
        (jpeg, "text/plain", 415),
        (b"", "image/jpeg", 400),
    ]
    for body, ctype, status in cases:
        res = client.post("/api/predict", content=body, headers={"Content-Type": ctype})
        assert res.status_code == status, res.text
        assert isinstance(res.json()["detail"], str) and res.json()["detail"]
    res = client.post("/api/predict", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert res.status_code == 200 and res.json()["prediction"] == "apples"


# ---- cnnlab export ---------------------------------------------------------------------


def _batches(run: Run, photos: list[Path]) -> list[torch.Tensor]:
    """Batches of 1 and 7 prepared colour images: the photos and held-out folder images."""
    held_out = run.split("test").images
    seven = torch.cat([run.prepare(photos), held_out])[:7]
    assert seven.shape == (7, 3, 16, 16)
    return [seven[:1], seven]


def test_onnx_export_of_a_photo_run(
    capsys, photo_run: Path, run: Run, photos: list[Path], tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out_file = tmp_path / "photos.onnx"
    code, out, err = run_cli(capsys, "export", str(photo_run), "-o", str(out_file))
    assert code == 0, err
    assert "input images uint8 N×3×16×16" in out and "same predicted classes" in out
    session = ort.InferenceSession(str(out_file), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [3, 16, 16]
    for images in _batches(run, photos):
        (logits,) = session.run(None, {"images": images.numpy()})
        got = torch.from_numpy(logits).softmax(1).numpy()
        expected = run.predict(images).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert (got.argmax(1) == expected.argmax(1)).all()
    assert [run.classes[i] for i in got.argmax(1)[:2]] == ["apples", "sky"]
    meta = {p.key: p.value for p in onnx.load(str(out_file)).metadata_props}
    assert json.loads(meta["classes"]) == list(PHOTO_COLOURS)
    assert json.loads(meta["images"])["kind"] == "photos"
    assert "N×3×16×16" in meta["input"]


def test_torchscript_export_of_a_photo_run(
    capsys, photo_run: Path, run: Run, photos: list[Path], tmp_path: Path
) -> None:
    out_file = tmp_path / "photos.pt"
    argv = ["export", str(photo_run), "-o", str(out_file), "--format", "torchscript", "--json"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    report = json.loads(out)
    assert report["input_shape"] == ["N", 3, 16, 16] and report["same_predictions"]
    with warnings.catch_warnings():  # torch.jit is deprecated; the file still loads
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(out_file))
    for images in _batches(run, photos):
        torch.testing.assert_close(module(images).softmax(1), run.predict(images))
