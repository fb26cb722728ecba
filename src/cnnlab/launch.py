"""``cnnlab train --nproc N``: start ``N`` training processes on this machine through
PyTorch's own launcher (the elastic agent behind ``torchrun``), and say in one line
which one failed, if one does.

It is ``torchrun --standalone --nproc-per-node N -m cnnlab train ...`` with the
``--nproc`` flag taken out: the same processes, environment and rendezvous, so the run
folder is the same whichever way a job is started. The agent watches the workers; when
one dies (killed, out of memory) it stops the others within a second or so, and this
reports the first failure instead of the agent's multi-line report.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence

from cnnlab.speed.threads import usable_cores

#: Set in the workers this launcher starts: they leave the report of a lost peer to it.
LAUNCHED_ENV = "CNNLAB_LAUNCHED"
#: The exit status of a worker whose collective failed because another one went away.
LOST_PEER_EXIT = 3


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the workers are single ranks)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str], run: str | None = None) -> int:
    """Run ``cnnlab`` with ``argv`` (minus ``--nproc``) in ``nproc`` processes; the exit
    status: 0, 2 when the first worker to fail stopped on a reported error (rank 0
    printed it), else 1 after one line naming the rank that failed first. ``run``: the run
    folder, for the hint on how to continue it."""
    # The agent's own logging repeats what the one line below says, in forty lines.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # world size × threads ≤ cores: each worker starts with its share (as torchrun does,
    # which sets 1); --threads auto then chooses within that share
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), LAUNCHED_ENV: None}
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // nproc)))
    os.environ[LAUNCHED_ENV] = "1"
    try:
        return _launch(nproc, argv, run)
    finally:  # the workers inherited these; this process goes on as it was
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _launch(nproc: int, argv: Sequence[str], run: str | None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    args = ("-m", "cnnlab", *without_nproc(argv))
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as exc:
        # A rank that lost its peers fails at once too, and the agent stops the rest with
        # SIGTERM: the one that caused it comes first.
        followers = (LOST_PEER_EXIT, -signal.SIGTERM)
        failures = sorted(
            exc.failures.items(),
            key=lambda item: (item[1].exitcode in followers, item[1].timestamp),
        )
        rank, first = failures[0]
        if first.exitcode == 2:
            return 2  # a reported error (a CnnlabError), already printed by rank 0
        if first.exitcode < 0:
            how = f"was killed by {first.signal_name()}"
        else:
            how = f"stopped with exit status {first.exitcode}"
        where = f"; the run folder {run} keeps its last finished epoch (--resume it)" if run else ""
        print(f"cnnlab train: error: rank {rank} {how}{where}", file=sys.stderr)
        return 1
    return 0
