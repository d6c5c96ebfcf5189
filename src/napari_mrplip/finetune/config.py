"""Typed configuration of a fine-tuning run (parsed once from the CLI or the widget)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

#: Fine-tuning modes, cheapest first.
MODES = ("linear", "prompt", "partial", "full")

#: Name of the JSON file that marks a fine-tuned checkpoint directory.
CONFIG_FILE = "finetune_config.json"
#: Format tag written into :data:`CONFIG_FILE`.
FORMAT = "mrplip-finetuned"


@dataclass
class FinetuneConfig:
    """How to fine-tune.

    Attributes
    ----------
    model : str
        Base model spec for ``models.encoders.get_encoder`` (``"mrplip-demo"``, a directory).
    mode : str
        ``"linear"`` (cosine head on frozen cached embeddings), ``"prompt"`` (CoOp context
        tokens through the frozen text tower), ``"partial"`` (last ``unfreeze_blocks``
        vision blocks + projection + head) or ``"full"`` (whole vision tower + head).
    out_dir : str
        Output directory: the checkpoint, ``metrics.json``, ``confusion.png``, ``progress.jsonl``.
    epochs : int
        Passes over the training tiles (linear: full-batch optimiser iterations x 10).
    lr : float or None
        Learning rate; ``None`` picks a per-mode default.
    batch_size : int
        Tiles per optimisation step (prompt/partial/full) and per embedding batch.
    weight_decay : float
        L2 penalty on trained parameters.
    device : str or None
        Torch device; ``None`` = CUDA when available, else CPU.
    val_fraction : float
        Fraction of each class's groups (annotations/regions/slides) held out when no
        separate validation data is given.
    seed : int
        Seed of the split, initialisation and data order.
    n_ctx : int
        Learnable context tokens in ``prompt`` mode.
    unfreeze_blocks : int
        Vision transformer blocks trained in ``partial`` mode (counted from the last).
    name : str or None
        Display name in the model catalogue (default: the output directory's name).
    register : bool
        Add the finished checkpoint to ``models.catalog``.
    """

    model: str = "mrplip-demo"
    mode: str = "linear"
    out_dir: str = "finetuned"
    epochs: int = 20
    lr: float | None = None
    batch_size: int = 32
    weight_decay: float = 1e-4
    device: str | None = None
    val_fraction: float = 0.3
    seed: int = 0
    n_ctx: int = 4
    unfreeze_blocks: int = 2
    name: str | None = None
    register: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"unknown fine-tuning mode {self.mode!r}; choose one of {', '.join(MODES)}"
            )
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")

    @property
    def learning_rate(self) -> float:
        """``lr`` or the mode's default."""
        default = {"linear": 0.05, "prompt": 2e-3, "partial": 1e-4, "full": 2e-5}[self.mode]
        return self.lr if self.lr is not None else default

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> None:
        from napari_mrplip.outputs import write_text

        write_text(path, json.dumps(self.to_dict(), indent=2), overwrite=True)
