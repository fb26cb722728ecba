"""evaluate, plot and visualize on colour photo runs with named classes, and on digits:
colour tiles, shortened class names, the top-losses grid, colour kernels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.cli import main
from cnnlab.evaluation import evaluate_probabilities, sample_losses, top_losses
from cnnlab.runs import load_run
from cnnlab.viz.evaluation_plots import plot_confusion_matrix, plot_tiles
from cnnlab.viz.features import kernel_grid_figure, rgb_kernels
from cnnlab.viz.figures import figure_png
from cnnlab.viz.plots import plot_image_grid
from cnnlab.viz.tiles import short_name, tile_images

LONG = "red_things_photographed_in_the_garden"
COLOURS = {LONG: (230, 20, 20), "green": (20, 200, 30), "blue": (20, 30, 230)}


def rgb_array(path: Path) -> np.ndarray:
    """A PNG's pixels as H×W×3 uint8 (after checking it is a readable PNG)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pure(arr: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> int:
    """How many pixels of ``arr`` are within ``tol`` of ``colour`` in every channel."""
    return int((np.abs(arr.astype(int) - np.array(colour)) <= tol).all(axis=2).sum())


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- tiles and names


def test_tile_images_colour_grey_and_floats() -> None:
    colour = torch.zeros(2, 3, 4, 5, dtype=torch.uint8)
    colour[0, 0] = 255  # first image pure red
    colour[1, 2, 1, 3] = 7  # one blue pixel
    tiles = tile_images(colour)
    assert tiles.shape == (2, 4, 5, 3) and tiles.dtype == np.uint8
    assert (tiles[0] == [255, 0, 0]).all()
    assert tiles[1, 1, 3].tolist() == [0, 0, 7] and tiles[1].sum() == 7
    grey = tile_images(torch.arange(20, dtype=torch.uint8).reshape(1, 1, 4, 5))
    assert grey.shape == (1, 4, 5) and grey[0, 3, 4] == 19
    assert tile_images(np.full((1, 2, 2), 0.5)).tolist() == [[[128, 128], [128, 128]]]
    with pytest.raises(ValueError, match="N×3×H×W"):
        tile_images(np.zeros((1, 2, 4, 4)))


def test_short_name_keeps_both_ends() -> None:
    assert short_name("cat") == "cat"
    assert short_name("automobile") == "automobile"
    cut = short_name("golden_retriever_puppies")
    assert cut == "golden_ret…ies" and len(cut) == 14
    a, b = short_name("a_very_long_folder_name_1", 12), short_name("a_very_long_folder_name_2", 12)
    assert a != b and len(a) == len(b) == 12
    with pytest.raises(ValueError):
        short_name("abc", 2)


def test_tiles_of_red_images_are_red_in_the_png(tmp_path: Path) -> None:
    red = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 255
    titles = [f"true {LONG} / pred green"] * 3
    arr = rgb_array(plot_tiles(red, titles, tmp_path / "red.png", notes=["#1"] * 3))
    # each 8×8 image is enlarged ten times to 80×80, drawn pixel for pixel
    assert pure(arr, (255, 0, 0), tol=10) >= 3 * 80 * 80 * 0.95
    grey = rgb_array(plot_tiles(red[:, :1], titles, tmp_path / "grey.png"))
    assert pure(grey, (255, 0, 0), tol=60) == 0  # one channel: drawn grey, never red
    arr = rgb_array(plot_image_grid(red, ["true a / pred b"] * 3, tmp_path / "grid.png"))
    assert pure(arr, (255, 0, 0), tol=10) > 3000


def test_confusion_matrix_of_two_to_twenty_named_classes(tmp_path: Path) -> None:
    for k in (2, 10, 20):
        classes = [f"a_rather_long_category_name_number_{i:02d}" for i in range(k)]
        cm = torch.full((k, k), 3) + torch.eye(k, dtype=torch.int64) * 500
        arr = rgb_array(plot_confusion_matrix(cm, classes, tmp_path / f"cm{k}.png", "run"))
        h, w = arr.shape[:2]
        # the figure grows with the class count, and the labels do not run away with it
        assert 400 <= w <= 2400 and 350 <= h <= 2000, (k, w, h)
        if k == 20:
            assert w > 1200


# ---------------------------------------------------------------- top losses


def test_top_losses_are_the_highest_loss_mistakes() -> None:
    probs = torch.tensor(
        [
            [0.9, 0.05, 0.05],  # right
            [0.2, 0.7, 0.1],  # wrong, p(true) 0.2
            [0.01, 0.98, 0.01],  # wrong, p(true) 0.01: the worst
            [0.1, 0.46, 0.44],  # wrong, p(true) 0.1, yet less sure of its answer than #1
            [0.05, 0.05, 0.9],  # right
        ]
    )
    labels = torch.tensor([0, 0, 0, 0, 2])
    losses = sample_losses(probs, labels)
    assert losses.mean().item() == pytest.approx(F.nll_loss(probs.log(), labels).item())
    ev = evaluate_probabilities(probs, labels, ("cat", "dog", "ship"))
    worst = top_losses(ev.misclassified, 2)
    assert [m.index for m in worst] == [2, 3]  # by loss, not by the wrong answer's probability
    assert worst[0].loss == pytest.approx(-np.log(0.01)) and worst[0].confidence == pytest.approx(
        0.98
    )
    assert [m.index for m in top_losses(ev.misclassified)] == [2, 3, 1]
    entry = ev.to_dict(misclassified=True)["misclassified"][0]
    assert entry["loss"] == pytest.approx(-np.log(0.2), abs=1e-5)


# ---------------------------------------------------------------- kernels


def test_rgb_kernels_are_scaled_each_on_its_own() -> None:
    w = torch.zeros(3, 3, 2, 2)
    w[0, 0] = 1.0  # weighs red up, green and blue 0
    w[0, 2] = -1.0  # and blue down
    w[1] = w[0] * 100  # the same kernel a hundred times stronger
    w[2] = 0.25  # flat
    rgb = rgb_kernels(w)
    assert rgb.shape == (3, 2, 2, 3)
    np.testing.assert_allclose(rgb[0, 0, 0], [1.0, 0.5, 0.0])  # red shows as red
    np.testing.assert_allclose(rgb[1], rgb[0])  # each kernel on its own scale
    np.testing.assert_allclose(rgb[2], 0.5)  # flat: mid-grey
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(5, 3, 3, 3, generator=g)
    rgb = rgb_kernels(rand)
    for i in range(5):
        lo, hi = rand[i].min(), rand[i].max()
        expected = ((rand[i] - lo) / (hi - lo)).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(rgb[i], expected, rtol=1e-6, atol=1e-6)
        assert rgb[i].min() == 0.0 and rgb[i].max() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rgb_kernels(torch.zeros(2, 1, 3, 3))
    for view in ("auto", "rgb", "signed"):
        assert figure_png(kernel_grid_figure(rand, view=view))[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="view"):
        kernel_grid_figure(rand, view="grey")


# ---------------------------------------------------------------- a tiny colour run


def _picture(path: Path, colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.clip(np.array(colour) + rng.integers(-25, 25, (16, 16, 3)), 0, 255)
    Image.fromarray(x.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed000-cnn run on 16×16 colour pictures in three classes, one long-named.

    Each class's training pictures show its colour; among its test pictures, two show
    another class's colour, so the run surely makes (confident) mistakes to report.
    """
    root = tmp_path_factory.mktemp("colour") / "pictures"
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    for k, name in enumerate(names):
        for i in range(12):
            _picture(root / "train" / name / f"{i}.png", COLOURS[name], rng)
        for i in range(4):
            colour = COLOURS[names[(k + 1) % 3]] if i < 2 else COLOURS[name]
            _picture(root / "test" / name / f"{i}.png", colour, rng)
    run = root.parent / "run"
    code = main(["train", "--data", str(root), "--model", "seed000-cnn", "--image-size", "16",
                 "--epochs", "2", "--out", str(run), "--quiet"])  # fmt: skip
    assert code == 0
    return run


def expected_top_losses(run_path: Path, count: int) -> tuple[list[int], list[float]]:
    """The test images with the highest loss among the wrong ones, computed here."""
    run = load_run(run_path)
    test = run.split("test")
    probs = run.predict(test.images)
    losses = -probs.clamp_min(1e-12).log()[torch.arange(len(test)), test.labels]
    wrong = (probs.argmax(1) != test.labels).nonzero().flatten()
    order = wrong[losses[wrong].argsort(descending=True, stable=True)][:count]
    return order.tolist(), losses[order].tolist()


def check_top_losses(folder: Path, run: Path, count: int) -> dict:
    report = json.loads((folder / "evaluation.json").read_text())
    indices, losses = expected_top_losses(run, count)
    assert len(indices) >= 2  # the check means something only when there are mistakes
    top = report["top_losses"]
    assert [t["index"] for t in top] == indices
    assert [t["loss"] for t in top] == pytest.approx(losses, abs=1e-4)
    for t in top:
        assert t["true"] != t["predicted"] and t["probability"] >= 1 / len(report["classes"])
    assert report["top_losses_page"] == "top-losses.png"
    return report


def test_evaluate_colour_run(colour_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "reports"
    code, text, err = run_cli(capsys, "evaluate", str(colour_run), "--out", str(out),
                              "--top-losses", "3")  # fmt: skip
    assert code == 0, err
    assert str(out / "top-losses.png") in text
    report = check_top_losses(out, colour_run, 3)
    assert len(report["top_losses"]) == 3 and report["misclassified_count"] > 3
    assert report["classes"] == sorted(COLOURS)
    for name in ("confusion.png", "misclassified.png", "top-losses.png"):
        arr = rgb_array(out / name)
        assert arr.shape[0] > 100 and arr.shape[1] > 300
    # the mistakes are coloured pictures: red, green or blue tiles, not grey ones
    for name in ("misclassified.png", "top-losses.png"):
        arr = rgb_array(out / name)
        assert sum(pure(arr, c) for c in COLOURS.values()) > 50 * 50


def test_plot_colour_run(colour_run: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "plot", str(colour_run), "--out", str(tmp_path))
    assert code == 0, err
    arr = rgb_array(tmp_path / "predictions.png")
    assert pure(arr, COLOURS[LONG]) > 1000 and pure(arr, COLOURS["blue"]) > 1000


def test_visualize_colour_run(colour_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vis"
    code, text, err = run_cli(capsys, "visualize", str(colour_run), "-o", str(out),
                              "--index", "5")  # fmt: skip
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "features-1-0.png",
        "features-2-3.png",
        "kernels-rgb.png",
        "kernels.png",
        "pooling-shift.png",
    ]
    for p in out.iterdir():
        assert rgb_array(p).shape[1] > 300
    assert "test image 5" in text and "3×16×16" in text
    # a picture of another size is prepared like the run's data
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (0, 200, 0)).save(photo)
    code, text, err = run_cli(capsys, "visualize", str(colour_run), "--image", str(photo),
                              "-o", str(tmp_path / "vis2"))  # fmt: skip
    assert code == 0, err
    assert "3×16×16" in text and (tmp_path / "vis2" / "kernels-rgb.png").is_file()
    code, text, err = run_cli(capsys, "visualize", str(colour_run), "--index", "99",
                              "-o", str(tmp_path / "vis3"))  # fmt: skip
    assert code == 2 and "--index 99" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- digits


def test_evaluate_and_visualize_digits(digits_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "reports"
    code, _, err = run_cli(capsys, "evaluate", str(digits_run), "--out", str(out))
    assert code == 0, err
    report = check_top_losses(out, digits_run, 24)
    assert report["classes"] == [str(i) for i in range(10)]
    assert rgb_array(out / "top-losses.png").shape[1] > 300
    vis = tmp_path / "vis"
    code, text, err = run_cli(capsys, "visualize", str(digits_run), "-o", str(vis))
    assert code == 0, err
    assert "kernels-rgb.png" not in text and "1×28×28" in text
    assert (vis / "kernels.png").is_file()
