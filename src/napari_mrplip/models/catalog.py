"""A small on-disk catalogue of model checkpoints the user has trained or added.

The pretrain and fine-tune panels (and CLI runs) register finished checkpoints here; the
heatmap panel's model picker lists them. Torch-free: reading the catalogue must be cheap.

The catalogue is a JSON file at ``$MRPLIP_HOME/models.json`` (default
``~/.local/share/napari-mrplip/models.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from napari_mrplip.outputs import home, write_text

#: Name of the embedded default model shipped inside the package.
DEMO_MODEL = "mrplip-demo"


@dataclass(frozen=True)
class ModelEntry:
    """One selectable model.

    Attributes
    ----------
    name : str
        Display name.
    spec : str
        What ``models.encoders.get_encoder`` takes: a built-in name or a directory path.
    kind : str
        ``"mrplip"``, ``"finetuned"``, ``"open_clip"``, ``"plip"`` or ``"conch"``.
    """

    name: str
    spec: str
    kind: str = "mrplip"


def _catalog_path() -> Path:
    return home() / "models.json"


def list_models() -> list[ModelEntry]:
    """The embedded model first, then registered checkpoints that still exist on disk."""
    entries = [ModelEntry(DEMO_MODEL, DEMO_MODEL, "mrplip")]
    path = _catalog_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raw = []
    for item in raw if isinstance(raw, list) else []:
        try:
            entry = ModelEntry(
                str(item["name"]), str(item["spec"]), str(item.get("kind", "mrplip"))
            )
        except (KeyError, TypeError):
            continue
        if Path(entry.spec).exists():
            entries.append(entry)
    return entries


def register_model(spec: str | Path, name: str | None = None, kind: str = "mrplip") -> ModelEntry:
    """Add (or refresh) a checkpoint directory in the catalogue, written atomically."""
    spec = str(Path(spec).resolve())
    entry = ModelEntry(name or Path(spec).name, spec, kind)
    others = [e for e in list_models()[1:] if e.spec != spec]
    path = _catalog_path()
    text = json.dumps([asdict(e) for e in [*others, entry]], indent=2)
    write_text(path, text, overwrite=True)  # temp + rename, the user's umask
    return entry
