"""MR-PLIP architecture and objective as data: JSON -> typed dataclasses, parsed once.

Built-in configurations live in ``models/configs/*.json``; ``load_config`` takes one of
their names or a path to a JSON file of the same shape. Unknown keys are errors (a typo
must not silently fall back to a default).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from napari_mrplip.models.errors import ConfigError

CONFIG_DIR = Path(__file__).with_name("configs")

#: OpenAI CLIP normalisation (QuiltNet, PLIP, CONCH use it too).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: Largest value of an integer architecture field (widths, layers, sizes); a config past it
#: is refused before anything is built. ``vocab_size`` may reach ``MAX_VOCAB``.
MAX_INT_FIELD = 16384
MAX_VOCAB = 1_000_000
#: Integer fields that may be 0 (a switch rather than a size).
_ZERO_OK = {"token_embed_dim", "visual_tokens"}

#: Loss names, in the order they are reported.
LOSS_NAMES = ("itc", "cvta", "mrtva", "itm", "mlm", "dta")


@dataclass
class VisionConfig:
    """The vision tower."""

    kind: str = "vit"  # "vit": open_clip VisionTransformer; "features": precomputed tile features
    layers: int = 12  # transformer blocks (kind="vit")
    width: int = 768  # token width (kind="vit"), adapter width (kind="features")
    head_width: int = 64  # width per attention head; heads = width // head_width
    patch_size: int = 16  # ViT patch side in pixels
    mlp_ratio: float = 4.0  # MLP hidden width / width
    feature_dim: int = 1024  # dimension of external features (kind="features"), e.g. UNI 1024
    freeze: bool = False  # freeze the vision tower (LiT-style); the paper froze UNI


@dataclass
class TextConfig:
    """The text tower (an open_clip TextTransformer, QuiltNet/CLIP-compatible shape)."""

    layers: int = 12  # transformer blocks
    width: int = 512  # token width
    heads: int = 8  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / width
    vocab_size: int = 49409  # open_clip BPE (49408) + one [MASK] token for MLM
    causal: bool = True  # causal self-attention as in CLIP (the fusion encoder is bidirectional)
    token_embed_dim: int = 0  # 0: embeddings of width `width`; >0: factorised V x E then E -> width


@dataclass
class FusionConfig:
    """The multimodal fusion encoder (self-attention + cross-attention blocks)."""

    layers: int = 2  # fusion blocks
    width: int = 256  # token width inside the fusion encoder
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / width
    visual_tokens: int = 0  # 0: all vision tokens; >0: average-pool them to about this many


@dataclass
class MRTVAConfig:
    """SimSiam heads for multi-resolution text-guided visual alignment."""

    proj_dim: int = 256  # output width of projector g (2-layer MLP with BatchNorm-free LayerNorm)
    pred_dim: int = 64  # bottleneck width of predictor h


@dataclass
class MRPLIPConfig:
    """A complete MR-PLIP model and objective."""

    name: str = "mrplip"  # identifier written into checkpoints
    embed_dim: int = 512  # shared image/text embedding dimension D
    image_size: int = 224  # square input side in pixels; tiles are resized to it
    image_mean: tuple[float, float, float] = OPENAI_MEAN  # per-channel mean of [0, 1] RGB
    image_std: tuple[float, float, float] = OPENAI_STD  # per-channel std of [0, 1] RGB
    context_length: int = 77  # caption tokens (including start/end)
    keyword_context_length: int = 16  # tokens per keyword
    vision: VisionConfig = field(default_factory=VisionConfig)  # vision tower
    text: TextConfig = field(default_factory=TextConfig)  # text tower
    fusion: FusionConfig = field(default_factory=FusionConfig)  # fusion encoder
    mrtva: MRTVAConfig = field(default_factory=MRTVAConfig)  # MRTVA heads
    loss_weights: dict[str, float] = field(  # weight per loss term; 0 disables (never computed)
        default_factory=lambda: {**dict.fromkeys(LOSS_NAMES, 1.0), "dta": 0.0}
    )  # dta (dense token alignment) is off unless a config enables it
    cvta_topk: int = 3  # positives per patch in CVTA, and keywords fed to the fusion encoder
    dense_topk: int = 4  # patch tokens per keyword aligned by the dense (dta) loss
    mlm_probability: float = 0.15  # fraction of caption tokens masked for MLM
    init_temperature: float = 0.07  # initial contrastive temperature (logit_scale = log(1/t))
    max_logit_scale: float = 100.0  # clamp of exp(logit_scale), as in CLIP

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        self.loss_weights = {k: float(v) for k, v in self.loss_weights.items()}
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (round-trips through ``from_dict``)."""
        out = asdict(self)
        out["image_mean"] = list(self.image_mean)
        out["image_std"] = list(self.image_std)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MRPLIPConfig:
        """Parse a dict, rejecting unknown keys at every level."""
        if not isinstance(raw, dict):
            raise ConfigError(f"an MR-PLIP config must be a JSON object, got {type(raw).__name__}")
        sub = {
            "vision": VisionConfig,
            "text": TextConfig,
            "fusion": FusionConfig,
            "mrtva": MRTVAConfig,
        }
        kwargs = _checked_kwargs(cls, raw, "config")
        try:
            for key, sub_cls in sub.items():
                if key in kwargs:
                    kwargs[key] = sub_cls(**_checked_kwargs(sub_cls, kwargs[key], key))
            return cls(**kwargs)
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"invalid MR-PLIP config: {e}") from e

    @property
    def enabled_losses(self) -> tuple[str, ...]:
        """Loss names with a non-zero weight, in report order."""
        return tuple(n for n in LOSS_NAMES if self.loss_weights.get(n, 0.0) != 0.0)


def _checked_kwargs(cls, raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {where!r} must be an object, got {raw!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in config section {where!r}; known keys: {sorted(known)}"
        )
    return dict(raw)


def _check_numbers(obj, where: str) -> None:
    """Every int field is an int in its range, every float a finite number."""
    import math

    for f in fields(obj):
        value, name = getattr(obj, f.name), f"{where}{f.name}"
        if f.type == "int":
            top = MAX_VOCAB if f.name == "vocab_size" else MAX_INT_FIELD
            low = 0 if f.name in _ZERO_OK else 1
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= top:
                raise ConfigError(f"{name} must be a whole number in [{low}, {top}], got {value!r}")
        elif f.type == "float":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be finite, got {value!r}")
        elif f.type == "str" and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")


def _validate(cfg: MRPLIPConfig) -> None:
    _check_numbers(cfg, "")
    for sub in ("vision", "text", "fusion", "mrtva"):
        _check_numbers(getattr(cfg, sub), f"{sub}.")
    if not isinstance(cfg.loss_weights, dict):
        raise ConfigError(f"loss_weights must be an object, got {cfg.loss_weights!r}")
    unknown = sorted(set(cfg.loss_weights) - set(LOSS_NAMES))
    if unknown:
        raise ConfigError(f"unknown loss weight(s) {unknown}; known: {list(LOSS_NAMES)}")
    if not cfg.enabled_losses:
        raise ConfigError("every loss weight is zero: enable at least one of " + str(LOSS_NAMES))
    if cfg.vision.kind not in ("vit", "features"):
        raise ConfigError(f"vision.kind must be 'vit' or 'features', got {cfg.vision.kind!r}")
    if cfg.vision.kind == "vit" and cfg.image_size % cfg.vision.patch_size:
        raise ConfigError(
            f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.vision.patch_size}"
        )
    if len(cfg.image_mean) != 3 or len(cfg.image_std) != 3 or min(cfg.image_std) <= 0:
        raise ConfigError("image_mean and image_std need three values, std > 0")
    if cfg.keyword_context_length > cfg.context_length:
        raise ConfigError("keyword_context_length cannot exceed context_length")
    if cfg.cvta_topk < 1:
        raise ConfigError("cvta_topk must be >= 1")
    if cfg.dense_topk < 1:
        raise ConfigError("dense_topk must be >= 1")
    if cfg.loss_weights.get("dta") and cfg.vision.kind != "vit":
        raise ConfigError("the dense token loss (dta) needs a ViT image tower (vision.kind='vit')")
    if not 0.0 < cfg.mlm_probability < 1.0:
        raise ConfigError("mlm_probability must be in (0, 1)")
    for name, width, heads in (
        ("text", cfg.text.width, cfg.text.heads),
        ("fusion", cfg.fusion.width, cfg.fusion.heads),
    ):
        if width % heads:
            raise ConfigError(f"{name}.width {width} is not divisible by {name}.heads {heads}")


def list_configs() -> list[str]:
    """Names of the built-in configurations."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> MRPLIPConfig:
    """Load a built-in configuration by name, or a JSON file by path.

    Raises
    ------
    ConfigError
        Unknown name, unreadable file, invalid JSON or invalid content; the message
        names the file.
    """
    text = str(name_or_path)
    path = CONFIG_DIR / f"{text}.json" if text in list_configs() else Path(text)
    if not path.is_file():
        raise ConfigError(
            f"no MR-PLIP config {text!r}: not a built-in name ({', '.join(list_configs())}) "
            "and not an existing JSON file"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read MR-PLIP config {path}: {e}") from e
    try:
        return MRPLIPConfig.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
