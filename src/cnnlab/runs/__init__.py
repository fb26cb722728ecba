"""Run folders: train into one, load a trained model from one, resume one.

- :mod:`cnnlab.runs.folder`: the files of a run folder, read and written safely;
- :mod:`cnnlab.runs.loaded`: :func:`load_run`, a trained model ready to predict;
- :mod:`cnnlab.runs.training`: :func:`train_run`, training into a run folder.
"""

from cnnlab.runs.folder import default_run_dir
from cnnlab.runs.loaded import Run, build_model, load_run
from cnnlab.runs.training import RunResult, train_run

__all__ = ["Run", "RunResult", "build_model", "default_run_dir", "load_run", "train_run"]
