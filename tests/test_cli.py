"""The command line: every workflow command, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.cli import main
from tests.drawing import draw_digit

# The tutorial models of docs/tutorials.md, "The models at a glance".
TUTORIAL_IDS = (
    "seed000-cnn",
    "seed001-lenet5",
    "seed001-alexnet",
    "seed002-cnn",
    "seed002-mlp",
    "seed003-deep-mnist",
    "seed004-lenet",
    "seed004-lenet-max",
)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_every_tutorial_model(capsys) -> None:
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines()}
    assert set(TUTORIAL_IDS) <= listed


def test_models_verbose_shows_recipe(capsys) -> None:
    code, out, _ = run_cli(capsys, "models", "-v", "seed002-cnn")
    assert code == 0 and "242,062 parameters" in out and "batch_size=200" in out


@pytest.mark.parametrize(
    ("model", "total"),
    [
        ("seed002-cnn", "242,062"),
        ("seed000-cnn", "206,922"),
        ("seed003-deep-mnist", "3,274,634"),
        ("seed004-lenet", "61,706"),
        ("seed004-lenet-max", "61,610"),
        ("seed001-lenet5", "61,706"),
    ],
)
def test_summary_reports_the_tutorial_totals(capsys, model: str, total: str) -> None:
    code, out, _ = run_cli(capsys, "summary", model)
    assert code == 0
    assert f"Total params: {total}" in out
    for needle in (
        "Input Shape",
        "Output Shape",
        "Mult-Adds",
        "Forward/backward pass size (MB)",
        "Params size (MB)",
        "Estimated Total Size (MB)",
        "Input size (MB)",
    ):
        assert needle in out


def test_summary_of_a_run_folder(capsys, digits_run: Path) -> None:
    code, out, _ = run_cli(capsys, "summary", str(digits_run))
    assert code == 0 and "206,922" in out


def test_summary_for_any_input_size(capsys) -> None:
    code, out, _ = run_cli(capsys, "summary", "cifar-net", "--input-size", "3,64,48")
    assert code == 0 and "[1, 3, 64, 48]" in out and "[1, 10]" in out
    # the multiply-adds grow with the picture: 64×48 has three times 32×32's pixels (and
    # after the unpadded 2×2 stem and the pooling, 3.3 times the maps: 63×47 against 31×31)
    _, small, _ = run_cli(capsys, "summary", "cifar-net")

    def madds(text: str) -> float:
        return float(text.split("Total mult-adds (M): ")[1].split()[0])

    assert madds(out) == pytest.approx(3.3 * madds(small), rel=0.03)
    with pytest.raises(SystemExit) as exc:
        run_cli(capsys, "summary", "cifar-net", "--input-size", "3,64")
    assert exc.value.code == 2 and "C,H,W" in capsys.readouterr().err
    # a model with a fixed dense layer cannot take another size: one line, exit 2
    code, _, err = run_cli(capsys, "summary", "seed000-cnn", "--input-size", "1,64,64")
    assert code == 2 and "cannot take input" in err and len(err.strip().splitlines()) == 1


def test_train_evaluate_predict_plot_round_trip(capsys, tmp_path: Path) -> None:
    import torch

    from cnnlab.data import prepare_digit
    from cnnlab.runs import load_run

    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "train",
        "--model",
        "seed004-lenet-max",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--out",
        str(run),
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["run"] == str(run) and 0 <= result["test_accuracy"] <= 1
    assert "Epoch 2/2" in err  # per-epoch lines when not on a terminal

    code, out, _ = run_cli(capsys, "evaluate", str(run), "--json")
    assert code == 0
    assert json.loads(out)["runs"][0]["accuracy"] == pytest.approx(result["test_accuracy"])

    code, out, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "1", "--quiet")
    assert code == 0, err
    assert json.loads((run / "history.json").read_text())[-1]["epoch"] == 3

    image = draw_digit("7", tmp_path / "seven.png")
    code, out, _ = run_cli(capsys, "predict", str(run), str(image), "--json")
    assert code == 0
    row = json.loads(out)
    assert row["file"] == str(image) and set(row["probabilities"]) == {str(i) for i in range(10)}
    # The run's own answer for the prepared picture, and its most probable class.
    probs = load_run(run).predict(torch.from_numpy(prepare_digit(image))[None])[0]
    expected = {str(i): float(p) for i, p in enumerate(probs)}
    assert row["probabilities"] == pytest.approx(expected, abs=1e-6)  # printed to 6 places
    assert row["prediction"] == str(int(probs.argmax()))

    code, out, _ = run_cli(capsys, "plot", str(run), "-o", str(tmp_path / "plots"))
    assert code == 0
    for name in ("history.png", "predictions.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_several_runs_reports_an_ensemble(capsys, digits_run: Path) -> None:
    code, out, _ = run_cli(capsys, "evaluate", str(digits_run), str(digits_run), "--no-reports")
    assert code == 0 and "ensemble of 2" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "lenet7"], "unknown model 'lenet7'"),
        (["train", "--dataset", "cifar99"], "unknown dataset"),
        (["train", "--epochs", "0"], "must be at least 1"),
        (["train", "--batch-size", "x"], "expected a whole number"),
        (["train", "--validation-split", "1.5"], "must be in [0, 1)"),
        (["train", "--lr", "-3"], "must be positive"),
        (["evaluate", "/nonexistent/run"], "does not exist"),
        (["summary", "nonet"], "unknown model 'nonet'"),
        (["models", "zzz*"], "no model matches"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        code = main(argv)
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_predict_on_unreadable_image(capsys, digits_run: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    code, _, err = run_cli(capsys, "predict", str(digits_run), str(text))
    assert code == 2 and "notes.png" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "predict", str(digits_run), str(tmp_path / "missing.png"))
    assert code == 2 and "missing.png" in err


def test_predict_says_a_blank_image_is_blank(capsys, digits_run: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")  # white paper, no ink
    digit = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(digit).line([(32, 10), (32, 54)], fill=0, width=6)
    digit.save(tmp_path / "one.png")
    files = [str(tmp_path / "blank.png"), str(tmp_path / "one.png")]
    code, out, _ = run_cli(capsys, "predict", str(digits_run), *files)
    blank, one = out.strip().splitlines()
    assert code == 0 and blank.endswith("blank.png: blank (no ink found)")
    assert one.startswith(files[1] + ": ") and "%" in one and "no ink" not in one
    code, out, _ = run_cli(capsys, "predict", str(digits_run), *files, "--json")
    answers = [json.loads(line) for line in out.strip().splitlines()]
    assert answers[0] == {"file": files[0], "prediction": None, "blank": True}
    assert answers[1]["prediction"] in answers[1]["probabilities"]


def test_malformed_idx_is_a_clean_error(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "mnist"
    bad.mkdir()
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (bad / name).write_bytes(b"\x1f\x8b garbage")
    code, _, err = run_cli(
        capsys, "train", "--data-dir", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "r")
    )
    assert code == 2 and "idx" in err.lower() and len(err.strip().splitlines()) == 1


def test_console_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cnnlab", "models", "seed004*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "seed004-lenet-max" in out


def test_usage_errors_name_the_command_once(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("cnnlab: error:")
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "x"])
    assert capsys.readouterr().err.startswith("cnnlab train: error: argument --epochs")
