"""Evaluation reports: confusion matrix, per-class scores, misclassified pages, the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from cnnlab.cli import main
from cnnlab.data import ImageData, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import (
    REPORT_FILES,
    EvaluationResult,
    check_report_dir,
    class_scores,
    confusion_matrix,
    default_report_dir,
    evaluate_probabilities,
    find_misclassified,
    write_reports,
)
from cnnlab.runs import load_run
from cnnlab.viz.evaluation_plots import page_path, paginate, plot_confusion_matrix, plot_tiles

CLASSES = tuple(str(i) for i in range(10))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def png_size(path: Path) -> tuple[int, int]:
    """Open and verify a PNG; return its (width, height)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


# ---------------------------------------------------------------- the numbers


def test_confusion_matrix_and_scores_by_hand() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    cm = confusion_matrix(labels, preds, 4)  # class 3: never seen, never predicted
    expected = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert cm.tolist() == expected and cm.dtype == torch.int64
    s = class_scores(cm)
    assert s.precision.tolist() == pytest.approx([1 / 2, 2 / 3, 1, 0])
    assert s.recall.tolist() == pytest.approx([1 / 2, 1, 2 / 3, 0])
    assert s.f1.tolist() == pytest.approx([1 / 2, 4 / 5, 4 / 5, 0])
    assert s.support.tolist() == [2, 2, 3, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_and_scores_match_scikit_learn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (5000,), generator=g)
    preds = torch.where(
        torch.rand(5000, generator=g) < 0.6, labels, torch.randint(0, 10, (5000,), generator=g)
    )
    preds[preds == 7] = 3  # a class that is never predicted: precision 0 by convention
    cm = confusion_matrix(labels, preds, 10)
    assert np.array_equal(cm.numpy(), sk_confusion_matrix(labels, preds, labels=range(10)))
    p, r, f, n = precision_recall_fscore_support(labels, preds, labels=range(10), zero_division=0)
    s = class_scores(cm)
    np.testing.assert_allclose(s.precision.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(s.recall.numpy(), r, rtol=1e-12)
    np.testing.assert_allclose(s.f1.numpy(), f, rtol=1e-12)
    assert s.support.tolist() == n.tolist()


def test_confusion_matrix_rejects_out_of_range_and_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        confusion_matrix(torch.tensor([0, 10]), torch.tensor([0, 1]), 10)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 10)


def test_evaluate_probabilities_lists_every_wrong_prediction() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 10, (1000,), generator=g)
    probs = torch.randn(1000, 10, generator=g).softmax(1)
    e = evaluate_probabilities(probs, labels, CLASSES, "random")
    wrong = probs.argmax(1) != labels
    assert len(e.misclassified) == int(wrong.sum()) == e.num_samples - int(e.confusion.trace())
    assert [m.index for m in e.misclassified] == wrong.nonzero().flatten().tolist()
    m = e.misclassified[0]
    assert m.true == int(labels[m.index]) and m.predicted == int(probs[m.index].argmax())
    assert m.confidence == pytest.approx(float(probs[m.index].max()))
    assert e.accuracy == pytest.approx(1 - float(wrong.float().mean()))
    assert e.loss == pytest.approx(float(F.nll_loss(probs.log(), labels)), rel=1e-5)
    rows = e.per_class()
    assert [r["class"] for r in rows] == list(CLASSES)
    assert sum(r["support"] for r in rows) == 1000
    assert find_misclassified(torch.eye(3), torch.arange(3)) == []


# ---------------------------------------------------------------- pages and pictures


def test_paginate_450_items() -> None:
    items = list(range(450))
    pages = paginate(items, per_page=200)
    assert [len(p) for p in pages] == [200, 200, 50]
    assert sum(pages, []) == items
    capped = paginate(items, per_page=200, max_pages=2)
    assert [len(p) for p in capped] == [200, 200] and capped[1][-1] == 399
    assert paginate(items, per_page=100, max_pages=None)[-1] == list(range(400, 450))
    assert paginate([], per_page=200) == []
    assert paginate(items[:200], per_page=200) == [items[:200]]
    with pytest.raises(ValueError):
        paginate(items, per_page=0)
    with pytest.raises(ValueError):
        paginate(items, max_pages=0)


def test_page_path_names() -> None:
    assert page_path("out", "misclassified", 1) == Path("out/misclassified.png")
    assert page_path("out", "misclassified", 2) == Path("out/misclassified-2.png")
    with pytest.raises(ValueError):
        page_path("out", "misclassified", 0)


def test_plots_are_valid_pngs(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    cm = torch.randint(0, 30, (10, 10), generator=g) + torch.eye(10, dtype=torch.int64) * 900
    w, h = png_size(plot_confusion_matrix(cm, CLASSES, tmp_path / "cm.png", "title"))
    assert 500 <= w <= 3000 and 400 <= h <= 3000
    images = torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8, generator=g)
    titles = ["7→1 0.93"] * 200
    w, h = png_size(plot_tiles(images, titles, tmp_path / "tiles.png", notes=["#1"] * 200))
    assert 1000 <= w <= 2100 and 800 <= h <= 2000  # 200 tiles of 84 px, ~20 columns
    w, h = png_size(plot_tiles(images[:3].float() / 255, titles[:3], tmp_path / "three.png"))
    assert 200 <= w <= 400


def fake_result(errors: int, n: int = 60) -> EvaluationResult:
    """An evaluation of ``n`` fake test images of which exactly ``errors`` are wrong."""
    g = torch.Generator().manual_seed(errors)
    labels = torch.arange(n) % 10
    preds = labels.clone()
    preds[:errors] = (labels[:errors] + 1) % 10
    probs = F.one_hot(preds, 10).float() * 0.8 + 0.02
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    test = ImageData(images, labels, CLASSES, "fake", "test")
    return EvaluationResult(
        [evaluate_probabilities(probs, labels, CLASSES, "fake-run")], None, test
    )


def test_write_reports_pages_caps_and_removes_stale_pages(tmp_path: Path) -> None:
    result = fake_result(errors=23)
    reports = write_reports(result, tmp_path, per_page=10, max_pages=2)
    assert reports.pages == 2 and reports.misclassified_shown == 20
    assert reports.misclassified_total == 23 and reports.capped
    assert (tmp_path / "misclassified-2.png").exists()
    assert not (tmp_path / "misclassified-3.png").exists()
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["misclassified_count"] == 23 and len(report["misclassified"]) == 23
    assert report["misclassified_shown"] == 20
    assert report["misclassified_pages"] == ["misclassified.png", "misclassified-2.png"]

    reports = write_reports(result, tmp_path, per_page=10, max_pages=None)
    assert reports.pages == 3 and not reports.capped
    png_size(tmp_path / "misclassified-3.png")

    (tmp_path / "misclassified-notes.png").write_bytes(b"mine")
    reports = write_reports(result, tmp_path)  # one page now: the older pages go
    assert reports.pages == 1
    assert sorted(p.name for p in tmp_path.glob("misclassified*.png")) == [
        "misclassified-notes.png",
        "misclassified.png",
    ]


def test_write_reports_without_errors(tmp_path: Path) -> None:
    reports = write_reports(fake_result(errors=0), tmp_path)
    assert reports.misclassified_total == 0 and reports.pages == 0
    assert {p.name for p in reports.paths} == set(REPORT_FILES)
    png_size(tmp_path / "misclassified.png")
    assert json.loads((tmp_path / "evaluation.json").read_text())["misclassified"] == []


def test_report_dir_checks(tmp_path: Path) -> None:
    assert default_report_dir(["a"]) == Path("a")
    assert default_report_dir(["a", "b"]) == Path("a/ensemble")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(CnnlabError, match="is not a folder"):
        check_report_dir(afile)
    with pytest.raises(CnnlabError, match="is a file"):
        check_report_dir(afile / "sub" / "dir")
    assert check_report_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()  # nothing is created by the check
    with pytest.raises(CnnlabError):
        write_reports(fake_result(errors=1), afile)
    assert afile.read_text() == "keep me"


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another, different seed000-cnn run on `digits`, to ensemble with `digits_run`."""
    from cnnlab.config import TrainConfig
    from cnnlab.runs import train_run

    out = tmp_path_factory.mktemp("runs") / "digits-seed001"
    train_run(
        TrainConfig(model="seed000-cnn", dataset="digits", epochs=1, batch_size=32, seed=1),
        out,
        progress=False,
    )
    return out


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def check_report_files(folder: Path, wrong: int) -> dict:
    for name in REPORT_FILES:
        assert (folder / name).is_file(), name
    w, h = png_size(folder / "confusion.png")
    assert 500 <= w <= 3000 and 400 <= h <= 3000
    w, h = png_size(folder / "misclassified.png")
    assert 100 <= w <= 2100 and 50 <= h <= 2000
    report = json.loads((folder / "evaluation.json").read_text())
    assert report["dataset"] == "digits" and report["test_samples"] == 359
    assert report["misclassified_count"] == wrong == len(report["misclassified"])
    assert np.array(report["confusion"]).sum() == 359
    assert len(report["per_class"]) == 10
    cm_lines = (folder / "confusion.csv").read_text().splitlines()
    assert cm_lines[0] == "true\\predicted," + ",".join(CLASSES) and len(cm_lines) == 11
    pc_lines = (folder / "per_class.csv").read_text().splitlines()
    assert pc_lines[0] == "class,precision,recall,f1,support" and len(pc_lines) == 11
    assert sum(int(line.split(",")[-1]) for line in pc_lines[1:]) == 359
    return report


def wrong_predictions(*runs: Path) -> int:
    test = load_dataset("digits", "test")
    probs = torch.stack([load_run(r).predict(test.images) for r in runs]).mean(0)
    return int((probs.argmax(1) != test.labels).sum())


def test_evaluate_writes_reports_into_the_run_folder(
    capsys, digits_run: Path, tmp_path: Path
) -> None:
    run = copy_run(digits_run, tmp_path / "run")
    before = digest(run)
    code, out, err = run_cli(capsys, "evaluate", str(run), "--device", "cpu")
    assert code == 0, err
    report = check_report_files(run, wrong_predictions(run))
    assert report["runs"][0]["run"] == str(run)
    assert {k: v for k, v in digest(run).items() if k in before} == before  # run files intact
    assert "test accuracy" in out and "precision" in out and "support" in out
    assert len([line for line in out.splitlines() if line.startswith("  9 ")]) == 1
    for name in REPORT_FILES:
        assert str(run / name) in out


def test_evaluate_ensemble_of_two_runs(capsys, digits_run: Path, second_run: Path, tmp_path):
    first = copy_run(digits_run, tmp_path / "a")
    code, out, err = run_cli(capsys, "evaluate", str(first), str(second_run), "--json")
    assert code == 0, err
    result = json.loads(out)  # one JSON object
    folder = first / "ensemble"
    report = check_report_files(folder, wrong_predictions(first, second_run))
    assert report["model"] == "ensemble of 2"
    assert [r["run"] for r in report["runs"]] == [str(first), str(second_run)]
    assert result["ensemble"]["accuracy"] == pytest.approx(report["accuracy"])
    assert len(result["ensemble"]["per_class"]) == 10
    assert all(len(r["per_class"]) == 10 for r in result["runs"])
    assert result["reports"] == [str(folder / n) for n in REPORT_FILES]
    assert not (second_run / "confusion.png").exists()


def test_evaluate_out_and_no_reports(capsys, digits_run: Path, tmp_path: Path) -> None:
    before = digest(digits_run)
    out_dir = tmp_path / "reports" / "digits"
    code, out, err = run_cli(capsys, "evaluate", str(digits_run), "--out", str(out_dir))
    assert code == 0, err
    check_report_files(out_dir, wrong_predictions(digits_run))
    code, out, err = run_cli(
        capsys, "evaluate", str(digits_run), "--out", str(tmp_path / "none"), "--no-reports"
    )
    assert code == 0 and not (tmp_path / "none").exists() and "wrote" not in out
    assert digest(digits_run) == before


@pytest.mark.parametrize("where", ["file", "below-file"])
def test_evaluate_bad_out_is_one_line(capsys, digits_run: Path, tmp_path: Path, where: str):
    afile = tmp_path / "results.png"
    afile.write_bytes(b"an earlier picture")
    target = afile if where == "file" else afile / "sub"
    code, out, err = run_cli(capsys, "evaluate", str(digits_run), "--out", str(target))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(afile) in err
    assert afile.read_bytes() == b"an earlier picture"
