"""Reading handwritten numbers: finding the digits, `cnnlab read`, `predict --explain`,
and the web API's /api/read."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.read import find_digits, read_number
from cnnlab.runs import load_run

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def photo_digits():
    """The benchmark's photo generator, imported as the benchmark imports it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import photo_digits

        yield photo_digits
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def number(digits_run: Path, photo_digits, tmp_path_factory: pytest.TempPathFactory):
    """A photo of five of the run's test digits written as a number (shaded paper,
    JPEG), and what the run reads on those digits in their plain form."""
    run = load_run(digits_run)
    test = run.split("test")
    picks = [3, 10, 21, 34, 47]
    images = test.images[picks, 0].numpy()
    rng = np.random.default_rng(7)
    data = photo_digits.number_photo(list(images), "gradient", rng)
    path = tmp_path_factory.mktemp("number") / "number.jpg"
    path.write_bytes(data)
    plain = run.predict(torch.from_numpy(images[:, None])).argmax(dim=1)
    return path, "".join(run.classes[int(i)] for i in plain)


def _drawing(strokes: list[list[tuple[int, int]]], size=(420, 160)) -> bytes:
    img = Image.new("L", size, 225)
    draw = ImageDraw.Draw(img)
    for stroke in strokes:
        draw.line(stroke, fill=30, width=9)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_digits_are_found_left_to_right_and_broken_ones_merged() -> None:
    strokes = [
        [(60, 30), (60, 130)],  # a "1"
        [(130, 30), (190, 30)],  # a "7" whose bar is detached from its stem
        [(195, 42), (150, 130)],
        [(250, 80), (330, 80)],  # a "+"-like mark: two pieces that overlap
        [(290, 40), (290, 125)],
    ]
    found = find_digits(_drawing(strokes))
    assert len(found) == 3
    lefts = [box[1] for _, box in found]
    assert lefts == sorted(lefts)
    for digit, _ in found:
        assert digit.shape == (28, 28) and digit.max() == 255


def test_specks_and_nothing_are_not_digits() -> None:
    assert find_digits(_drawing([])) == []
    strokes = [[(60, 30), (60, 130)], [(200, 140), (202, 141)]]  # a "1" and a speck
    assert len(find_digits(_drawing(strokes))) == 1


def test_read_gives_the_number_the_run_reads_on_the_plain_digits(number, digits_run: Path) -> None:
    path, plain = number
    reading = read_number(load_run(digits_run), path)
    assert len(reading.digits) == 5
    agree = sum(a == b for a, b in zip(reading.number, plain, strict=True))
    assert agree >= 4, (reading.number, plain)
    assert all(0.0 <= d.confidence <= 1.0 for d in reading.digits)


def test_cli_read_prints_the_number_and_json(number, digits_run: Path, capsys) -> None:
    path, _ = number
    assert main(["read", str(path), "--run", str(digits_run)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: ") and line.count("%") == 5
    assert main(["read", str(path), "--run", str(digits_run), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["file"] == str(path) and len(answer["number"]) == 5
    assert [d["digit"] for d in answer["digits"]] == list(answer["number"])
    lefts = [d["box"][1] for d in answer["digits"]]
    assert lefts == sorted(lefts)


def test_cli_read_bad_input_is_one_line(
    digits_run: Path, photo_run: Path, tmp_path: Path, capsys
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    for args in (
        ["read", str(tmp_path / "missing.png"), "--run", str(digits_run)],
        ["read", str(text), "--run", str(digits_run)],
        ["read", str(text), "--run", str(tmp_path / "no-run")],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("cnnlab read: error: ") and len(err.strip().splitlines()) == 1
    png = tmp_path / "one.png"
    Image.open(io.BytesIO(_drawing([[(60, 30), (60, 130)]]))).save(png)
    assert main(["read", str(png), "--run", str(photo_run)]) == 2
    assert "digit run" in capsys.readouterr().err


def test_predict_explain_writes_each_pictures_stages(
    number, digits_run: Path, tmp_path: Path, capsys
) -> None:
    path, _ = number
    other = tmp_path / "one.png"
    Image.open(io.BytesIO(_drawing([[(60, 30), (60, 130)]]))).save(other)
    out = tmp_path / "explain"
    assert main(["predict", str(digits_run), str(path), str(other), "--explain", str(out)]) == 0
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["01-number", "02-one"]
    names = sorted(p.name for p in (out / "02-one").iterdir())
    assert "07-prepared.png" in names and "01-picture.png" in names
    prepared = np.asarray(Image.open(out / "02-one" / "07-prepared.png"))
    assert prepared.shape == (28, 28) and prepared.max() == 255
    capsys.readouterr()


def test_explain_refuses_photo_runs(photo_run: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "one.png"
    Image.new("RGB", (20, 14), (200, 30, 30)).save(png)
    assert main(["predict", str(photo_run), str(png), "--explain", str(tmp_path / "x")]) == 2
    assert "--explain" in capsys.readouterr().err


def test_api_read(number, digits_run: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from cnnlab.serve import Limits, create_app

    path, _ = number
    expected = read_number(load_run(digits_run), path).number
    with TestClient(create_app(digits_run, limits=Limits(max_body_bytes=200_000))) as client:
        res = client.post(
            "/api/read", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"}
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["number"] == expected and len(body["digits"]) == 5
        assert np.array(body["digits"][0]["input"]).shape == (28, 28)
        res = client.post("/api/read", files={"file": ("n.jpg", path.read_bytes(), "image/jpeg")})
        assert res.status_code == 200 and res.json()["number"] == expected
        for kwargs, status in (
            ({"content": b"", "headers": {"Content-Type": "image/png"}}, 400),
            ({"content": b"hello", "headers": {"Content-Type": "image/png"}}, 400),
            ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
            ({"json": [[0] * 28] * 28}, 415),
            ({"files": {"file": ("a.txt", b"hi", "text/plain")}}, 415),
            ({"content": b"x" * 300_000, "headers": {"Content-Type": "image/png"}}, 413),
        ):
            res = client.post("/api/read", **kwargs)
            assert res.status_code == status, (kwargs.get("headers"), res.text)
            assert isinstance(res.json()["detail"], str)
        blank = io.BytesIO()
        Image.new("L", (200, 100), 230).save(blank, "PNG")
        res = client.post(
            "/api/read", content=blank.getvalue(), headers={"Content-Type": "image/png"}
        )
        assert res.status_code == 200 and res.json() == {**res.json(), "number": "", "digits": []}
        assert client.get("/api/health").json()["status"] == "ok"


def test_api_read_refuses_photo_runs(photo_run: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    buf = io.BytesIO()
    Image.new("RGB", (20, 14), (200, 30, 30)).save(buf, "PNG")
    with TestClient(create_app(photo_run, warm_up=False)) as client:
        res = client.post(
            "/api/read", content=buf.getvalue(), headers={"Content-Type": "image/png"}
        )
        assert res.status_code == 400 and "digit run" in res.json()["detail"]
