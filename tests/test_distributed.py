"""Data-parallel training: shards, global batch norm, the launcher, and real 2-process jobs
(gloo on the CPU, started as torchrun starts them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab.cli import main
from cnnlab.distributed import (
    Context,
    GlobalBatchNorm,
    global_batch_norm,
    rows_of_rank,
    shard_epoch,
)
from cnnlab.launch import without_nproc
from cnnlab.runs import load_run
from cnnlab.speed.threads import candidate_threads, process_cores
from tests.conftest import write_photo_folder

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ------------------------------------------------------------------ shards, in-process
@pytest.mark.parametrize(("n", "batch", "world"), [(36, 8, 2), (37, 8, 2), (10, 6, 3), (9, 4, 4)])
def test_shards_are_disjoint_cover_the_epoch_and_split_each_global_batch(
    n: int, batch: int, world: int
) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [shard_epoch(order, batch, r, world) for r in range(world)]
    steps = -(-n // batch)
    assert all(len(s.sizes) == len(s.weights) == steps for s in shards)
    real = [
        s.rows[sum(s.sizes[:k]) : sum(s.sizes[: k + 1])]
        for s in shards
        for k in range(steps)
        if s.weights[k] > 0
    ]
    seen = torch.cat(real).tolist()
    assert sorted(seen) == list(range(n))  # every row once: disjoint and covering
    for k in range(steps):
        # step k of the ranks together is step k of one process: the same rows
        parts = [
            s.rows[sum(s.sizes[:k]) : sum(s.sizes[: k + 1])] for s in shards if s.weights[k] > 0
        ]
        assert torch.cat(parts).tolist() == order[k * batch : (k + 1) * batch].tolist()
        global_size = len(order[k * batch : (k + 1) * batch])
        # once DDP averages over ranks, each image's loss counts 1 / global size: a
        # rank's mean loss × weight / world_size spreads 1 / global size on each row
        for s in shards:
            if s.weights[k]:
                assert s.weights[k] / (world * s.sizes[k]) == pytest.approx(1 / global_size)


def test_a_rank_without_a_row_of_the_last_batch_steps_with_weight_zero() -> None:
    order = torch.arange(9)  # batch 4 on 4 ranks: the last batch holds one row
    last = [shard_epoch(order, 4, r, 4) for r in range(4)]
    assert [s.weights[-1] for s in last] == [4.0, 0.0, 0.0, 0.0]
    assert [s.sizes[-1] for s in last] == [1, 1, 1, 1]  # every rank steps


def test_evaluation_rows_belong_to_exactly_one_rank() -> None:
    for n, world in ((9, 2), (10, 3), (2, 4)):
        parts = [rows_of_rank(n, Context(r, world)).tolist() for r in range(world)]
        assert sum(parts, []) == list(range(n))


def test_global_batch_norm_is_plain_batch_norm_in_one_process() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    reference.load_state_dict(model.state_dict())
    converted = global_batch_norm(model, cuda=False)
    assert isinstance(converted[1], GlobalBatchNorm)
    assert set(converted.state_dict()) == set(reference.state_dict())  # weights load back
    x = torch.randn(6, 3, 8, 8)
    torch.testing.assert_close(converted(x), reference(x))
    torch.testing.assert_close(converted[1].running_var, reference[1].running_var)


def test_launcher_drops_only_its_own_flag() -> None:
    argv = ["train", "--nproc", "2", "--epochs", "1", "--nproc=3", "--out", "r"]
    assert without_nproc(argv) == ["train", "--epochs", "1", "--out", "r"]


def test_processes_on_one_machine_share_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cnnlab.speed.threads.usable_cores", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert process_cores() == 1 and candidate_threads() == [1]  # 2 × 1 ≤ 2 cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert candidate_threads() == [2, 1]


def test_batch_that_does_not_divide_among_processes_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cnnlab import distributed
    from cnnlab.errors import CnnlabError
    from cnnlab.train import Trainer

    trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), progress=False)
    monkeypatch.setattr(distributed, "_current", Context(0, 2))
    trainer.dist = distributed.current()
    images = torch.zeros(8, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(CnnlabError, match="--batch-size 5 does not divide among 2 processes"):
        trainer.fit((images, torch.zeros(8, dtype=torch.long)), batch_size=5)


# ------------------------------------------------------------------ 2-process jobs
def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _train_args(folder: Path, out: Path, epochs: int, model: str = "vgg-bn") -> list[str]:
    # fp32 and one thread: the comparison is of summation orders, not of bf16 rounding
    return [
        "train", "--data", str(folder), "--model", model, "--image-size", "16",
        "--epochs", str(epochs), "--batch-size", "8", "--precision", "fp32",
        "--threads", "1", "--validation-split", "0.2", "--out", str(out), "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 classes × 15: 36 training images (30 train, 6 validation) and 9 test images, odd;
    # batches of 8: 8, 8, 8 and 6, so no rank of two steps on a weight-0 stand-in
    return write_photo_folder(tmp_path_factory.mktemp("ddp") / "pics", per_class=15, size=(16, 16))


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(
    pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single, double, rows = tmp_path / "one", tmp_path / "two", tmp_path / "rows"
    rows.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "cnnlab", *_train_args(pictures, double, 2)]  # fmt: skip
    job = subprocess.run(
        cmd, env=_env(CNNLAB_RECORD_ROWS=str(rows)), capture_output=True, text=True, timeout=120
    )
    assert job.returncode == 0, job.stderr[-2000:]
    assert main(_train_args(pictures, single, 2)) == 0

    # (a) each epoch the two ranks trained on disjoint shards covering the training split
    for epoch in (0, 1):
        ranks = [
            [int(v) for v in (rows / f"rank{r}-epoch{epoch}.txt").read_text().split()]
            for r in (0, 1)
        ]
        assert not set(ranks[0]) & set(ranks[1])
        assert sorted(ranks[0] + ranks[1]) == list(range(30))
    # (b) the weights of one process with batch 8 are those of two with 4 each: global
    # batch norm (vgg-bn has six) normalises by the same statistics
    a = load_file(single / "weights.safetensors")
    b = load_file(double / "weights.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("num_batches_tracked"):
            assert torch.equal(a[key], b[key])
        elif "running" in key:  # summed in another order: float rounding, relative
            torch.testing.assert_close(b[key], a[key], rtol=2e-3, atol=1e-4)
        else:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4)
    assert max((a[k] - b[k]).abs().max().item() for k in a if "running" not in k) > 0
    # (c) every test image counted once, on two ranks (9 images: 5 and 4)
    m1 = json.loads((single / "metrics.json").read_text())
    m2 = json.loads((double / "metrics.json").read_text())
    assert m2["test_samples"] == m1["test_samples"] == 9
    assert m2["test_accuracy"] == pytest.approx(m1["test_accuracy"], abs=1e-6)  # 6 of 9
    assert m2["test_loss"] == pytest.approx(m1["test_loss"], rel=1e-3, abs=1e-5)
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert json.loads((double / "config.json").read_text())["world_size"] == 2
    h1 = json.loads((single / "history.json").read_text())
    h2 = json.loads((double / "history.json").read_text())
    for r1, r2 in zip(h1, h2, strict=True):  # epoch figures summed over both ranks
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-3, abs=1e-5), key
    # resuming with another number of processes: one line, exit status 2
    capsys.readouterr()
    code = main(["train", "--resume", str(double), "--epochs", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "written by 2 process(es); resume with the same number (--nproc 2), not 1" in err


@pytest.mark.slow
def test_an_error_under_nproc_is_one_line_from_rank_0(pictures: Path, tmp_path: Path) -> None:
    argv = _train_args(pictures, tmp_path / "run", 1)
    argv[argv.index("--batch-size") + 1] = "7"  # does not divide among 2 processes
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", *argv, "--nproc", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "cnnlab train: error: --batch-size 7 does not divide among 2 processes; "
        "give a multiple of 2"
    ]


def _rank_pid(marker: str, rank: int) -> int | None:
    """The process of ``rank`` among those whose environment holds ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"MARK={marker}".encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_killed_rank_ends_the_job_in_one_line_and_resume_finishes_it(
    pictures: Path, tmp_path: Path
) -> None:
    run, marker = tmp_path / "run", uuid.uuid4().hex
    # augmented: each rank draws its own; a constant schedule: the same plan however long
    augmented = ["--augment", "photos", "--schedule", "constant"]
    argv = [*_train_args(pictures, run, 40, model="seed000-cnn"), *augmented]
    job = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", *argv, "--nproc", "2"],
        env=_env(MARK=marker),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = _rank_pid(marker, 1)
        assert pid is not None and job.poll() is None, "the job ended before the kill"
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = job.communicate(timeout=30)
    finally:
        job.kill()
    assert time.monotonic() - killed < 30
    assert job.returncode not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnlab train: error: rank 1 was killed by SIGKILL")
    # the folder holds its last finished epoch, loadable as it is
    done = len(json.loads((run / "history.json").read_text()))
    assert 1 <= done < 40
    assert load_run(run).model is not None
    # --resume with the same number of processes finishes it
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab",
            "train",
            "--resume",
            str(run),
            "--nproc",
            "2",
            "--epochs",
            "1",
            "--quiet",
        ],  # fmt: skip
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == done + 1 and metrics["world_size"] == 2
    assert metrics["test_samples"] == 9
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])
    # the checkpoint kept both ranks' random states: the killed and resumed run is, bit
    # for bit, the run that trained its epochs without a stop
    straight = tmp_path / "straight"
    argv = [*_train_args(pictures, straight, done + 1, model="seed000-cnn"), *augmented]
    job = subprocess.run(
        [sys.executable, "-m", "cnnlab", *argv, "--nproc", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.returncode == 0, job.stderr[-2000:]
    a = load_file(straight / "weights.safetensors")
    b = load_file(run / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
