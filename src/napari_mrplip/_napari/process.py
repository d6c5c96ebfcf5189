"""Run a training command in a separate process and tail its JSON-lines progress file.

Qt-free: the Pretrain panel polls :meth:`TrainingProcess.poll` from a ``QTimer``. Training
runs out of process because GPU memory, crashes and napari's quit confirmation all argue
for it; the process writes ``OUT/progress.jsonl`` (see ``napari_mrplip/progress.py``) and its stderr
goes to ``OUT/process-stderr.log`` so a dead process can show why it died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path


def pretrain_command(args: list[str], gpus: int = 1) -> list[str]:
    """The argv of ``mrplip pretrain ARGS`` (``torchrun`` over ``gpus`` processes when > 1)."""
    if gpus > 1:
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={gpus}", "-m", "napari_mrplip.train", *args,
        ]  # fmt: skip
    return [sys.executable, "-m", "napari_mrplip.train", *args]


class JsonlTail:
    """Reads complete new lines of a growing JSON-lines file (a partial last line waits)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""

    def read(self) -> list[dict]:
        """Events appended since the last call."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                events.append(item)
        return events


class TrainingProcess:
    """A training subprocess writing ``out_dir/progress.jsonl``.

    Parameters
    ----------
    argv : list of str
        Full command line (see :func:`pretrain_command`).
    out_dir : path
        The run's output directory (created).
    env : dict, optional
        Extra environment variables (e.g. ``MRPLIP_HOME``).
    """

    def __init__(self, argv: list[str], out_dir: str | Path, env: dict | None = None):
        self.argv = list(argv)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.out_dir / "process-stderr.log"
        self.tail = JsonlTail(self.out_dir / "progress.jsonl")
        self.tail.offset = self._existing_size()
        self.events: list[dict] = []
        self.proc: subprocess.Popen | None = None
        self._env = {**os.environ, **(env or {})}

    def _existing_size(self) -> int:
        try:
            return self.tail.path.stat().st_size  # a resumed run appends: skip old events
        except FileNotFoundError:
            return 0

    def start(self) -> TrainingProcess:
        """Launch the process (its own process group, so a stop reaches torchrun's workers)."""
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=self._env,
            start_new_session=True,
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def poll(self) -> list[dict]:
        """New progress events since the last poll (also appended to :attr:`events`)."""
        new = self.tail.read()
        self.events.extend(new)
        return new

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Ask the trainer to checkpoint and exit (SIGINT by default, to the whole group)."""
        if not self.running:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Terminate immediately (no checkpoint)."""
        if self.running:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; returns its status."""
        code = self.proc.wait(timeout)
        self._stderr.close()
        return code

    def stderr_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines the process wrote to stderr."""
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(deque(text.splitlines(), maxlen=lines))


def loadable_checkpoint(step_dir: str | Path, model_config: str) -> Path:
    """Turn a training-state checkpoint into a model directory ``load_model`` opens.

    A stopped run leaves ``OUT/checkpoints/step_N/`` (weights + optimizer state). When it
    has no ``mrplip_config.json``, the model is rebuilt from ``model_config``, the weights
    loaded (safetensors, no pickle) and saved next to it as ``OUT/stopped-step_N/``.
    """
    step_dir = Path(step_dir)
    if (step_dir / "mrplip_config.json").is_file():
        return step_dir
    from safetensors.torch import load_model as st_load_model

    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.config import load_config
    from napari_mrplip.models.mrplip import build_model

    weights = step_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{step_dir}: no model.safetensors in this checkpoint")
    model = build_model(load_config(model_config))
    st_load_model(model, str(weights))
    out = step_dir.parent.parent / f"stopped-{step_dir.name}"
    save_model(model, out)
    return out
