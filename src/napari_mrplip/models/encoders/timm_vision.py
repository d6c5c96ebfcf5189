"""Vision-only tile encoders (UNI, CONCH v1.5, Virchow, Prov-GigaPath) in timm's hub format.

These are published as a folder (or Hugging Face cache entry) holding timm's
``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg`` with mean/std and
input size) and ``pytorch_model.bin`` / ``model.safetensors``: what
``timm.create_model("hf-hub:...", pretrained=True)`` reads. The model is built from that
config with ``timm.create_model(architecture, pretrained=False, **model_args)`` (the two
layer classes Virchow names as strings, ``SwiGLUPacked`` and ``SiLU``, are mapped from an
allow-list; nothing else is imported by name) and loaded strictly. ``timm:ARCH@FILE``
takes a bare state dict for a timm architecture with its default arguments.

There is no text tower: ``encode_text`` raises ``NoTextTowerError``. Use these encoders for
fine-tuning and linear probes (``mrplip finetune``), not for prompts.

Embedding: the model's pooled output; where the config keeps every token
(``global_pool: ""``, Virchow), the CLS token concatenated with the mean of the patch
tokens (after register tokens), as the Virchow model cards prescribe.
"""

from __future__ import annotations

from pathlib import Path

from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import (
    build_bounded,
    find_weights,
    load_into,
    read_json_object,
    read_state_dict,
    weights_fingerprint,
)
from napari_mrplip.models.errors import ModelLoadError

PREFIX = "timm:"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")
#: Layer classes named as strings in published timm configs (Virchow, Virchow2).
LAYER_NAMES = {
    "timm.layers.SwiGLUPacked": ("timm.layers", "SwiGLUPacked"),
    "timm.layers.mlp.SwiGLUPacked": ("timm.layers", "SwiGLUPacked"),
    "torch.nn.SiLU": ("torch.nn", "SiLU"),
    "torch.nn.modules.activation.SiLU": ("torch.nn", "SiLU"),
    "torch.nn.GELU": ("torch.nn", "GELU"),
}


def _config(root: Path) -> dict | None:
    raw = read_json_object(root / "config.json")
    return raw if raw is not None and "architecture" in raw else None


def detect(spec: str) -> bool:
    if spec.startswith(PREFIX):
        return True
    root = Path(spec).expanduser()
    return root.is_dir() and _config(root) is not None


def _model_args(args: dict, path: Path) -> dict:
    import importlib

    out = dict(args)
    for key in ("mlp_layer", "act_layer", "norm_layer"):
        value = out.get(key)
        if isinstance(value, str):
            if value not in LAYER_NAMES:
                raise ModelLoadError(
                    f"{path}: model_args.{key} = {value!r} is not a layer this loader knows "
                    f"({', '.join(sorted(LAYER_NAMES))}); nothing is imported by name"
                )
            module, name = LAYER_NAMES[value]
            out[key] = getattr(importlib.import_module(module), name)
    return out


def _pool(model, x):
    out = model(x)
    if out.ndim == 3:  # every token kept: CLS + mean of the patch tokens (Virchow's recipe)
        import torch

        patches = out[:, getattr(model, "num_prefix_tokens", 1) :]
        out = torch.cat([out[:, 0], patches.mean(dim=1)], dim=-1)
    return out


def _parse(spec: str) -> tuple[str, dict, Path, str]:
    """``(architecture, model_args, weights, name)`` for a folder or ``timm:ARCH@FILE``."""
    if spec.startswith(PREFIX):
        arch, sep, file = spec[len(PREFIX) :].partition("@")
        if not sep or not arch or not file:
            raise ModelLoadError(
                f"{spec!r}: expected 'timm:ARCH@FILE', e.g. "
                "'timm:vit_large_patch16_224@/models/uni/pytorch_model.bin'"
            )
        weights = Path(file).expanduser()
        if not weights.is_file():
            raise ModelLoadError(f"{spec!r}: weights file {weights} does not exist")
        return arch, {"num_classes": 0}, weights, arch
    root = Path(spec).expanduser()
    cfg = _config(root)
    if cfg is None:
        raise ModelLoadError(f"{root}/config.json is not a timm config (no 'architecture')")
    args = _model_args(cfg.get("model_args", {}), root / "config.json")
    args.setdefault("num_classes", cfg.get("num_classes", 0))
    if "global_pool" in cfg:
        args.setdefault("global_pool", cfg["global_pool"])
    return str(cfg["architecture"]), args, find_weights(root, WEIGHT_NAMES), root.name


def load(spec: str, device: str | None = None, precision: str = "auto") -> TorchEncoder:
    """Load a vision-only timm encoder (no prompts)."""
    import timm

    arch, args, weights, name = _parse(spec)
    if not timm.is_model(arch):
        raise ModelLoadError(f"{spec}: timm has no architecture {arch!r} (timm {timm.__version__})")

    def make():
        try:
            return timm.create_model(arch, pretrained=False, **args)
        except (TypeError, ValueError, KeyError, AssertionError) as e:
            raise ModelLoadError(f"{spec}: cannot build {arch} with {args}: {e}") from e

    model = build_bounded(make, weights)
    report = load_into(model, read_state_dict(weights), weights)
    device = pick_device(device)
    model = model.float().to(device).eval()
    pre = model.pretrained_cfg or {}
    root = Path(spec).expanduser()
    published = (_config(root) or {}).get("pretrained_cfg", {}) if root.is_dir() else {}
    pre = {**pre, **published}
    size = int(args.get("img_size") or pre.get("input_size", (3, 224, 224))[-1])
    dim = int(model.num_features) * (2 if args.get("global_pool") == "" else 1)
    return TorchEncoder(
        model_id=f"timm:{name}:{weights_fingerprint(weights)}",
        image_fn=lambda x: _pool(model, x),
        text_fn=None,
        input_size=size,
        mean=tuple(pre.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(pre.get("std", (0.229, 0.224, 0.225))),
        embed_dim=dim,
        logit_scale=float("nan"),
        context_length=0,
        device=device,
        precision=precision,
        module=model,
        source=str(weights.parent),
        load_report=report,
        no_text_reason=(
            f"{name} ({arch}) is a vision-only tile encoder: it has no text tower, so prompts "
            "cannot be scored. Use it for fine-tuning or a linear probe (mrplip finetune "
            f"--model {spec} --mode linear ...) and then the fine-tuned checkpoint's classes"
        ),
    )
