"""The training loop, optimizers, schedules, callbacks and the batch pipeline."""

from __future__ import annotations

import copy

import pytest
import torch

from cnnlab import CnnlabError, create_model
from cnnlab.data.loader import Preprocess, TensorBatches, fit_to_input
from cnnlab.train import OPTIMIZERS, EarlyStopping, Trainer, make_optimizer
from cnnlab.train.optim import LeanAdam, LeanAdamW, lr_factor
from tests.conftest import make_blobs


def blobs(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_blobs(n, seed)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long()


def test_fit_learns_an_easy_task() -> None:
    torch.manual_seed(0)
    trainer = Trainer(create_model("seed000-cnn"), progress=False)
    history = trainer.fit(blobs(), epochs=3, batch_size=32, validation_split=0.25)
    h = history.history
    assert len(h["loss"]) == 3 and h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] > 0.9
    assert trainer.evaluate(blobs(200, 1))["accuracy"] > 0.9


def test_onehot_labels_train_the_same_model() -> None:
    """Categorical cross-entropy on one-hot targets is the sparse loss: from the same seed,
    both give the same model, with label smoothing too."""
    x = blobs(200, 1)[0]
    for smoothing, steps in ((0.0, None), (0.1, 6)):
        probs = []
        for labels in ("int", "onehot"):
            torch.manual_seed(0)
            t = Trainer(
                create_model("seed000-cnn"),
                labels=labels,
                label_smoothing=smoothing,
                progress=False,
            )
            t.fit(blobs(), epochs=1, steps=steps, batch_size=32)
            probs.append(t.predict(x))
        torch.testing.assert_close(probs[1], probs[0], rtol=0, atol=1e-5)
        if not smoothing:
            assert t.evaluate(blobs(200, 1))["accuracy"] > 0.9


def test_onehot_label_input_is_accepted() -> None:
    x, y = blobs()
    torch.manual_seed(0)
    t = Trainer(create_model("seed000-cnn"), progress=False)
    t.fit((x, torch.nn.functional.one_hot(y, 10)), epochs=1, batch_size=64)
    assert t.step == len(range(0, 400, 64))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_reduces_the_loss(name: str) -> None:
    torch.manual_seed(0)
    t = Trainer(create_model("seed000-cnn"), optimizer=name, progress=False)
    before = t.evaluate(blobs())["loss"]
    t.fit(blobs(), epochs=2, batch_size=32)
    assert t.evaluate(blobs())["loss"] < before


def test_unknown_optimizer_and_bad_lr() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(CnnlabError, match="optimizer must be one of .*, not 'rmsprop2'"):
        make_optimizer("rmsprop2", params)
    with pytest.raises(CnnlabError, match="lr must be positive, not -1"):
        make_optimizer("adam", params, lr=-1)


def test_schedules() -> None:
    f = lr_factor("onecycle", 100)
    assert f(0) == pytest.approx(1 / 25)
    assert f(25) == pytest.approx(1.0)
    assert f(100) < 1e-3
    assert lr_factor("step", 100)(80) == pytest.approx(0.01)
    assert lr_factor("cosine", 100)(50) == pytest.approx(0.5)
    assert lr_factor("constant", 100)(99) == 1.0
    with pytest.raises(CnnlabError, match="schedule must be one of constant, step, cosine"):
        lr_factor("warm", 10)


def test_steps_limit_stops_mid_epoch() -> None:
    t = Trainer(create_model("seed004-lenet"), progress=False)
    t.fit(blobs(), steps=5, batch_size=32)
    assert t.step == 5


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_early_stopping_restores_best(ema: float) -> None:
    """Training stops ``patience`` epochs after the best one, and the model (its EMA average
    when kept) ends with the weights it had at the end of that best epoch, not the last's."""
    from cnnlab.train import LambdaCallback

    # A scripted val_loss makes the best epoch (3) and the stop (epoch 3 + patience) known;
    # epoch 2's setback must not count once epoch 3 improves.
    script = [3.0, 4.0, 1.0, 2.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]

    def scripted(trainer, epoch, logs) -> None:  # noqa: ANN001
        assert "val_loss" in logs  # a real figure, replaced
        logs["val_loss"] = script[epoch - 1]

    weights: list[dict[str, torch.Tensor]] = []

    def record(trainer, epoch, logs) -> None:  # noqa: ANN001
        weights.append({k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()})

    torch.manual_seed(0)
    t = Trainer(create_model("seed000-cnn"), lr=0.05, optimizer="sgd", ema=ema, progress=False)
    stop = EarlyStopping(monitor="val_loss", patience=2)
    callbacks = [LambdaCallback(scripted), stop, LambdaCallback(record)]
    t.fit(blobs(200), epochs=10, batch_size=50, validation_split=0.25, callbacks=callbacks)
    assert t.epoch == 5 and len(weights) == 5  # best at 3, no better at 4 and 5: stop
    assert stop.best_epoch == 3 and stop.best == 1.0
    final = t.eval_model.state_dict()
    assert all(torch.equal(final[k], weights[2][k]) for k in final)
    assert any(not torch.equal(final[k], weights[-1][k]) for k in final)


def test_validation_split_is_seeded_and_disjoint() -> None:
    from cnnlab.train.trainer import split_indices

    x, y = blobs(100)
    x[:, 0, 0, 0] = torch.arange(100, dtype=torch.uint8)  # tag each image
    seen: list[torch.Tensor] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(28 * 28, 10)

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            seen.append((inp[:, 0, 0, 0] * 255).round().long())
            return self.lin(inp.flatten(1))

    # The spy's forward has a side effect, which the speed layer's traced view would
    # drop (see cnnlab.speed.rewrite): it trains as it is.
    held_out = []
    for seed in (0, 0, 1):
        seen.clear()
        Trainer(Spy(), progress=False, speed_up=False).fit(
            (x, y), epochs=1, batch_size=100, validation_split=0.2, seed=seed
        )
        train_ids, val_ids = set(seen[0].tolist()), set(seen[1].tolist())
        # 20% of each class, rounded: about 20 of the 100
        assert len(train_ids) + len(val_ids) == 100 and 18 <= len(val_ids) <= 22
        assert not train_ids & val_ids
        assert val_ids == set(split_indices(100, 0.2, seed, y)[1].tolist())  # as documented
        held_out.append(val_ids)
    assert held_out[0] == held_out[1] != held_out[2]  # the seed picks the split
    # without stratifying, the plain random split of runs saved before it
    seen.clear()
    Trainer(Spy(), progress=False, speed_up=False).fit(
        (x, y), epochs=1, batch_size=100, validation_split=0.2, seed=0, stratify=False
    )
    assert set(seen[1].tolist()) == set(split_indices(100, 0.2, 0)[1].tolist())


def test_validation_split_holds_out_each_class_in_proportion() -> None:
    from cnnlab.train.trainer import split_indices

    # 90 images of class 0, 10 of class 1: a plain 20% split may hold out any number of
    # the rare class; the stratified one holds out exactly 2 of it and 18 of the other
    labels = torch.tensor([0] * 90 + [1] * 10)
    plain = [int(labels[split_indices(100, 0.2, s)[1]].sum()) for s in range(20)]
    assert len(set(plain)) > 1
    for seed in range(20):
        keep, held = split_indices(100, 0.2, seed, labels)
        assert torch.bincount(labels[held]).tolist() == [18, 2]
        assert sorted(keep.tolist() + held.tolist()) == list(range(100))
    assert not torch.equal(
        split_indices(100, 0.2, 0, labels)[1], split_indices(100, 0.2, 1, labels)[1]
    )


def test_bad_fit_arguments() -> None:
    t = Trainer(create_model("seed004-lenet"), progress=False)
    with pytest.raises(CnnlabError, match="validation split"):
        t.fit(blobs(), validation_split=1.5)
    with pytest.raises(CnnlabError, match="batch size"):
        t.fit(blobs(), batch_size=0)
    with pytest.raises(CnnlabError, match="uint8"):
        t.fit((torch.rand(4, 1, 28, 28), torch.zeros(4)))


def test_predict_gives_probabilities() -> None:
    t = Trainer(create_model("seed000-cnn"), progress=False)
    p = t.predict(blobs(10)[0])
    assert p.shape == (10, 10)
    assert torch.allclose(p.sum(1), torch.ones(10), atol=1e-5)


def test_batches_cover_every_sample_once_per_epoch() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    labels = torch.arange(10)
    b = TensorBatches(images, labels, 3, Preprocess((1, 1, 1)), shuffle=True, seed=1)
    got = torch.cat([y for _, y in b])
    assert sorted(got.tolist()) == list(range(10))
    b.set_epoch(1)
    assert torch.cat([y for _, y in b]).tolist() != got.tolist()
    b.set_epoch(0)
    assert torch.cat([y for _, y in b]).tolist() == got.tolist()


def test_fit_to_input_pads_resizes_and_repeats_channels() -> None:
    x = torch.ones(2, 1, 28, 28)
    padded = fit_to_input(x, (1, 32, 32), "pad")
    assert padded.shape == (2, 1, 32, 32)
    assert padded[0, 0, 0, 0] == 0 and padded[0, 0, 2, 2] == 1
    big = fit_to_input(x, (3, 227, 227), "resize")
    assert big.shape == (2, 3, 227, 227)
    assert torch.allclose(big[:, 0], big[:, 2])


def test_preprocess_scales_and_normalises() -> None:
    img = torch.full((1, 1, 28, 28), 255, dtype=torch.uint8)
    assert Preprocess()(img).max() == 1.0
    assert Preprocess(mean=0.5, std=0.5)(img).max() == pytest.approx(1.0)
    assert Preprocess(mean=0.1307, std=0.3081)(img * 0).min() == pytest.approx(-0.1307 / 0.3081)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_lean_adam_steps_like_torch(name: str) -> None:
    """The lean fused step gives torch's fused Adam/AdamW updates, state and resumption."""
    torch.manual_seed(0)
    ours_model = create_model("seed004-lenet-max")
    torch_model = copy.deepcopy(ours_model)
    ours = make_optimizer(name, ours_model.parameters(), 1e-3, 0.01)
    assert isinstance(ours, LeanAdam | LeanAdamW)
    reference_cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    reference = reference_cls(torch_model.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    x = torch.randn(8, 1, 28, 28)
    for step in range(6):
        if step == 3:  # a schedule changes the rate between steps
            for group in (*ours.param_groups, *reference.param_groups):
                group["lr"] = 5e-4
        for model, opt in ((ours_model, ours), (torch_model, reference)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(ours_model.parameters(), torch_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert ours._lists is not None  # the kept lists were used after torch's first step
    resumed = make_optimizer(name, ours_model.parameters(), 1e-3, 0.01)
    resumed.load_state_dict(ours.state_dict())
    ours_model.fc3.weight.grad = None  # a parameter without a gradient: torch's own path
    before = ours_model.fc3.weight.detach().clone()
    resumed.step()
    assert torch.equal(ours_model.fc3.weight, before)
    assert resumed.state[ours_model.fc1.weight]["step"].item() == 7  # counted once
    assert resumed.state[ours_model.fc3.weight]["step"].item() == 6
    ours_model.fc3.weight.grad = torch.zeros_like(ours_model.fc3.weight)
    resumed.step()  # the lean path again, on counters that torch's step advanced
    assert resumed._lists is not None
    assert resumed.state[ours_model.fc1.weight]["step"].item() == 8
    assert resumed.state[ours_model.fc3.weight]["step"].item() == 7


def test_batches_prepared_in_chunks_match_batch_by_batch(monkeypatch) -> None:
    import cnnlab.data.loader as loader

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (103, 1, 6, 6), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (103,), generator=gen)
    preprocess = Preprocess((1, 8, 8), fit="pad", mean=0.5, std=0.5)
    seen = []
    for chunk in (0, 3 * 10 * 64 * 4):  # one batch per chunk; three batches per chunk
        monkeypatch.setattr(loader, "CHUNK_BYTES", chunk)
        b = TensorBatches(images, labels, 10, preprocess, shuffle=True, seed=3, channels_last=True)
        seen.append(list(b))
    assert [len(x) for x, _ in seen[1]] == [10] * 10 + [3]
    for (x0, y0), (x1, y1) in zip(*seen, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert x1.shape[1:] == (1, 8, 8)


def test_epoch_metrics_weight_batches_by_size() -> None:
    from cnnlab.train.trainer import _EpochMetrics

    metrics = _EpochMetrics(steps=2, samples=5, device=torch.device("cpu"))
    metrics.add(
        torch.tensor(1.0),
        torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]]),
        torch.tensor([1, 1, 1]),
    )
    assert metrics.result() == pytest.approx({"loss": 1.0, "accuracy": 2 / 3})
    metrics.add(torch.tensor(4.0), torch.tensor([[5.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert metrics.result() == pytest.approx({"loss": (3 * 1.0 + 2 * 4.0) / 5, "accuracy": 3 / 5})
