"""A training run does not import torch.compile's machinery it does not use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_training_with_adam_never_imports_dynamo() -> None:
    out = _run(
        """
        import sys, torch
        from cnnlab.data import ImageData
        from cnnlab.models import create_model
        from cnnlab.train import Trainer
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (256,), generator=g)
        data = ImageData(images, labels, tuple("0123456789"), "noise", "train")
        model = create_model("seed000-cnn", in_channels=1, num_classes=10)
        trainer = Trainer(model, optimizer="adam", progress=False)
        trainer.fit(data, epochs=1, batch_size=64)
        trainer.optimizer.state_dict()
        print("torch._dynamo" in sys.modules)
        """
    )
    assert out == "False"


def test_with_dynamo_loaded_the_optimizer_takes_torchs_marked_path() -> None:
    """Once dynamo is loaded, torch's own never-compile markers are used again, and the
    weights are those of the run without it."""
    code = """
        import sys, torch
        {pre}
        from cnnlab.train.optim import make_optimizer
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = make_optimizer("adam", model.parameters(), lr=0.1)
        for _ in range(3):
            model(torch.ones(2, 4)).square().sum().backward()
            opt.step()
            opt.zero_grad()
        opt.state_dict()
        print("torch._dynamo" in sys.modules, model.weight.sum().item())
    """
    lazy = _run(code.format(pre=""))
    loaded = _run(code.format(pre="import torch._dynamo"))
    assert lazy.split()[0] == "False" and loaded.split()[0] == "True"
    assert lazy.split()[1] == loaded.split()[1]


def test_every_optimizer_steps_without_dynamo_and_as_torch_does() -> None:
    """SGD, Nesterov, Adagrad and Adadelta (torch's steps wrapped to mark graph breaks):
    no dynamo import, step hooks still called, and the same weights as with dynamo
    loaded, where torch's own wrapper runs."""
    code = """
        import sys, torch
        {pre}
        from cnnlab.train.optim import make_optimizer
        out = []
        for name in ("sgd", "nesterov", "adagrad", "adadelta"):
            torch.manual_seed(0)
            model = torch.nn.Linear(4, 3)
            opt = make_optimizer(name, model.parameters(), lr=0.1, momentum=0.9)
            calls = []
            opt.register_step_pre_hook(lambda *a: calls.append(1))
            for _ in range(3):
                model(torch.ones(2, 4)).square().sum().backward()
                opt.step()
                opt.zero_grad()
            assert not model.weight.requires_grad or model.weight.grad is None
            out.append(f"{{name}}:{{len(calls)}}:{{model.weight.sum().item():.9g}}")
        print("torch._dynamo" in sys.modules, " ".join(out))
    """
    lazy = _run(code.format(pre=""))
    loaded = _run(code.format(pre="import torch._dynamo"))
    assert lazy.split()[0] == "False" and loaded.split()[0] == "True"
    assert lazy.split()[1:] == loaded.split()[1:]
    assert all(part.split(":")[1] == "3" for part in lazy.split()[1:])
