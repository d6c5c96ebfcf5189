"""JSON-lines progress events that the napari Pretrain and Fine-tune panels (or any tool) tail.

One JSON object per line in ``OUT/progress.jsonl``, flushed after each write:

- ``{"event": "start", "total_steps": N, "start_step": s, "world_size": W, "config": {...}, "time": t}``
- ``{"event": "step", "step": i, "total_steps": N, "losses": {name: float}, "lr": x,
  "samples_per_s": y, "time": t}`` (``step`` counts finished optimizer steps, 1-based)
- ``{"event": "checkpoint", "step": i, "path": "...", "time": t}``
- ``{"event": "done", "checkpoint": "OUT/final", "step": N, "time": t}``
- ``{"event": "stopped", "checkpoint": "...", "step": i, "time": t}`` (SIGINT/SIGTERM)
- ``{"event": "error", "message": "...", "time": t}``

``time`` is seconds since the epoch. A resumed run appends to the same file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


class ProgressLog:
    """Appends progress events to a JSON-lines file.

    Parameters
    ----------
    path : str or Path or None
        The file; ``None`` writes nothing (events are still returned).
    enabled : bool
        ``False`` on processes that must not write (torchrun ranks other than 0).
    """

    def __init__(self, path: str | Path | None, enabled: bool = True):
        self.path = None if path is None else Path(path)
        self.enabled = enabled and self.path is not None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields) -> dict:
        """Write one event; returns it (with ``time`` added)."""
        record = {"event": event, **fields, "time": time.time()}
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        return record


def read_events(path: str | Path) -> list[dict]:
    """All complete JSON lines of a file (a line torn by a killed writer is skipped); empty
    when the file does not exist. Progress logs and the manifest's partial logs use it."""
    events = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def loss_curve(events: list[dict], name: str = "loss") -> dict[int, float]:
    """``{step: value}`` of one loss term; a resumed run's later values overwrite earlier ones."""
    return {e["step"]: e["losses"][name] for e in events if e.get("event") == "step"}
