"""``cnnlab export``: ONNX and TorchScript files that give the eager model's answers."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.export import export_run
from cnnlab.runs import load_run

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_onnx(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    assert main(["export", str(digits_run), "-o", str(out)]) == 0
    return out


def test_onnx_matches_eager_predictions_at_batch_1_and_7(
    digits_run: Path, digits_onnx: Path
) -> None:
    run = load_run(digits_run)
    session = ort.InferenceSession(str(digits_onnx), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [1, 28, 28]
    test = load_dataset("digits", "test")
    for n in (1, 7):
        images = test.images[:n]
        (logits,) = session.run(None, {"images": images.numpy()})
        assert logits.shape == (n, 10)
        expected = run.predict(images).numpy()
        got = torch.from_numpy(logits).softmax(1).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_onnx_file_carries_classes_and_preprocessing(digits_run: Path, digits_onnx: Path) -> None:
    model = onnx.load(str(digits_onnx))
    assert model.opset_import[0].version >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == [str(i) for i in range(10)]
    assert meta["model"] == "seed000-cnn" and meta["dataset"] == "digits"
    assert json.loads(meta["preprocess"])["input_size"] == [1, 28, 28]


def test_cli_reports_the_check(capsys, digits_run: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "m.onnx"
    code, out, err = run_cli(capsys, "export", str(digits_run), "-o", str(out_file), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["file"] == str(out_file) and out_file.stat().st_size == report["bytes"]
    assert report["checked_batches"] == [1, 7] and report["same_predictions"]
    assert report["max_abs_diff"] < 1e-4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_torchscript_export_matches(capsys, digits_run: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "m.pt"
    code, out, _ = run_cli(
        capsys, "export", str(digits_run), "-o", str(out_file), "--format", "torchscript"
    )
    assert code == 0 and "TorchScript" in out and "same predicted classes" in out
    with warnings.catch_warnings():  # torch.jit is deprecated; the file still loads
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(out_file))
    images = load_dataset("digits", "test").images[:5]
    expected = load_run(digits_run).predict(images)
    torch.testing.assert_close(module(images).softmax(1), expected)


def test_bad_run_folder_is_one_line_and_exit_2(capsys, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "export", str(tmp_path / "missing"), "-o", "x.onnx")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "export", str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 1 and "config.json" in err


def test_missing_onnx_packages_is_one_line(
    capsys, monkeypatch: pytest.MonkeyPatch, digits_run: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import now raises ImportError
    code, _, err = run_cli(capsys, "export", str(digits_run), "-o", str(tmp_path / "m.onnx"))
    assert code == 2 and err.count("\n") == 1
    assert "onnxscript" in err and "cnnlab[export]" in err
    assert not (tmp_path / "m.onnx").exists()


def test_failed_check_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, digits_run: Path, tmp_path: Path
) -> None:
    import cnnlab.export as export

    monkeypatch.setattr(export, "_compare", lambda *a: (0.5, False))
    with pytest.raises(CnnlabError, match="does not match"):
        export_run(digits_run, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
