"""``PretrainConfig``: every knob of a pretraining run, typed, parsed once from the CLI.

The ``mrplip pretrain`` command (``train/cli.py``) and the napari Pretrain panel build one
``PretrainConfig`` and hand it to ``train.pretrain.pretrain``; library code never sees an
``argparse.Namespace``. The config is written to ``OUT/pretrain_config.json`` so that a run
can be resumed (``--resume``) and reproduced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

#: ``--slides`` entry that wraps ``skimage.data.immunohistochemistry()`` as a slide.
SKIMAGE_IHC = "skimage:immunohistochemistry"

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


class PretrainConfigError(ValueError):
    """A pretraining option is invalid; the message names the option and what to do."""


@dataclass
class PretrainConfig:
    """A pretraining run.

    Attributes
    ----------
    model_config : str
        Built-in MR-PLIP config name (``mrplip-tiny``) or a path to a config JSON.
    slides : list[str]
        Slide paths, or ``skimage:immunohistochemistry``.
    out : Path
        Output directory (``progress.jsonl``, ``checkpoints/``, ``final/``).
    max_steps : int
        Optimizer steps in the whole run (each of ``grad_accum`` micro-batches).
    batch_size : int
        Global batch of bags per optimizer step (summed over processes and accumulation);
        must be divisible by ``world_size * grad_accum``.
    """

    model_config: str = "mrplip-tiny"
    slides: list[str] = field(default_factory=list)
    out: Path = Path("mrplip-run")
    max_steps: int = 300
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.05
    warmup_steps: int = 20  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    checkpoint_every: int = 100  # steps between training-state checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # newest training-state checkpoints kept on disk
    workers: int = 0  # DataLoader worker processes per training process
    threads: int | None = None  # torch CPU threads per process; None = torch's default
    magnifications: tuple[float, ...] = (5.0, 10.0, 20.0)
    tile_px: int | None = None  # tile side at every magnification; None = model image_size
    parents_per_slide: int = 16
    children_per_parent: int | None = None  # keep k random children per tile; None = all
    slide_mpp: float | None = None  # µm/px at level 0 for slides that do not record it
    seed: int = 0
    resume: bool = False
    augment: bool = True  # random flips/rotations of whole bags
    captioner: str = "stain"  # "stain" (offline StainCaptioner) or a VLM directory
    manifest: Path | None = None  # reuse a manifest; default OUT/manifest.jsonl (cached)
    features: Path | None = None  # feature store (mrplip embed --store) for a features config
    feature_encoder: str | None = None  # frozen encoder spec: run on pixels, or check the store
    caption_batch: int = 64  # tiles per captioning batch when building the manifest
    log_every: int = 1  # steps between progress events
    progress_bar: bool = True
    register: bool = True  # add OUT/final to the model catalogue

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.slides = [str(s) for s in self.slides]
        self.magnifications = tuple(float(m) for m in self.magnifications)
        if self.manifest is not None:
            self.manifest = Path(self.manifest)
        if self.features is not None:
            self.features = Path(self.features)
        self.validate()

    def validate(self) -> None:
        """Raise ``PretrainConfigError`` naming the first bad option."""
        checks = [
            (self.max_steps >= 1, "--max-steps must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.grad_accum >= 1, "--grad-accum must be >= 1"),
            (self.lr > 0, "--lr must be > 0"),
            (self.warmup_steps >= 0, "--warmup-steps must be >= 0"),
            (self.checkpoint_every >= 0, "--checkpoint-every must be >= 0"),
            (self.workers >= 0, "--workers must be >= 0"),
            (self.parents_per_slide >= 1, "--parents-per-slide must be >= 1"),
            (len(self.magnifications) >= 1, "--magnifications needs at least one value"),
            (self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}"),
            (self.device in DEVICES, f"--device must be one of {DEVICES}"),
            (self.slide_mpp is None or self.slide_mpp > 0, "--slide-mpp must be > 0"),
            (self.tile_px is None or self.tile_px >= 16, "--tile-px must be >= 16"),
            (
                self.children_per_parent is None or self.children_per_parent >= 1,
                "--children-per-parent must be >= 1",
            ),
            (self.log_every >= 1, "--log-every must be >= 1"),
            (self.threads is None or self.threads >= 1, "--threads must be >= 1"),
            (self.caption_batch >= 1, "--caption-batch must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise PretrainConfigError(message)
        if sorted(self.magnifications) != list(self.magnifications):
            raise PretrainConfigError(
                f"--magnifications must be increasing (coarsest first), got {self.magnifications}"
            )

    def micro_batch(self, world_size: int) -> int:
        """Bags per process per forward pass; raises if the global batch does not split."""
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise PretrainConfigError(
                f"--batch-size {self.batch_size} must be divisible by processes x --grad-accum "
                f"= {world_size} x {self.grad_accum}"
            )
        return self.batch_size // parts

    def to_json(self) -> dict:
        """JSON-safe dict (paths as strings)."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["manifest"] = None if self.manifest is None else str(self.manifest)
        data["features"] = None if self.features is None else str(self.features)
        data["magnifications"] = list(self.magnifications)
        return data

    @classmethod
    def from_json(cls, data: dict) -> PretrainConfig:
        """Inverse of ``to_json``; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise PretrainConfigError(f"a pretrain config must be a JSON object, got {data!r:.80}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise PretrainConfigError(f"unknown pretrain config keys: {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            if isinstance(e, PretrainConfigError):
                raise
            raise PretrainConfigError(f"invalid pretrain config value: {e}") from e

    def save(self, path: Path) -> None:
        from napari_mrplip.outputs import write_text

        write_text(path, json.dumps(self.to_json(), indent=2), overwrite=True)
