"""Bare checkpoints of a named open_clip architecture: ``open_clip:ARCH@FILE``.

PathGen-CLIP (``pathgenclip.pt`` for ``ViT-B-16``; PathGen-CLIP-L for ``ViT-L-14-336``) and
similar releases ship a state dict without a config. The architecture is then named by the
user and taken from open_clip's own bundled config of that name
(``open_clip.get_model_config``): never guessed from the file. Loading is strict, as
open_clip's ``create_model(ARCH, pretrained=FILE)``; the tokenizer is open_clip's CLIP BPE
(architectures whose tokenizer would be downloaded are refused); normalisation is the
architecture's ``preprocess_cfg`` when it has one, else OpenAI mean/std (open_clip's default).
"""

from __future__ import annotations

from pathlib import Path

from napari_mrplip.models.errors import ModelLoadError

PREFIX = "open_clip:"


def detect(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse(spec: str) -> tuple[str, Path]:
    """``open_clip:ARCH@FILE`` -> ``(ARCH, FILE)`` (ModelLoadError naming the problem)."""
    arch, sep, file = spec[len(PREFIX) :].partition("@")
    if not sep or not arch or not file:
        raise ModelLoadError(
            f"{spec!r}: expected 'open_clip:ARCH@FILE', e.g. "
            "'open_clip:ViT-B-16@/models/pathgenclip.pt' (ARCH from open_clip.list_models())"
        )
    return arch, Path(file).expanduser()


def load(spec: str, device: str | None = None, precision: str = "auto"):
    """Load ``FILE`` into open_clip's architecture ``ARCH``."""
    import open_clip

    from napari_mrplip.models.encoders.open_clip_dir import encoder_from

    arch, file = parse(spec)
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        near = [m for m in open_clip.list_models() if m.lower().startswith(arch[:5].lower())]
        raise ModelLoadError(
            f"{spec!r}: open_clip has no architecture {arch!r}; choose one of "
            f"open_clip.list_models(), e.g. {', '.join(near[:6]) or 'ViT-B-16'}"
        )
    if not file.is_file():
        raise ModelLoadError(
            f"{spec!r}: weights file {file} does not exist; pass the downloaded checkpoint "
            "(e.g. PathGen-CLIP's pathgenclip.pt) after '@'"
        )
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
        raise ModelLoadError(
            f"{spec!r}: {arch} uses a Hugging Face text tower; put the checkpoint in a folder "
            "with an open_clip_config.json and its tokenizer files instead (local-dir:PATH)"
        )
    raw = {"model_cfg": cfg, "preprocess_cfg": cfg.get("preprocess_cfg", {})}
    return encoder_from(raw, file, file.parent, f"open_clip:{arch}", device, precision)
