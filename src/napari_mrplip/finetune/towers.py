"""The trainable torch model behind an encoder, and its text and vision transformers.

Prompt learning trains context tokens through the text tower; partial/full fine-tuning trains
the vision tower. Both start from :func:`trainable_model`.
"""

from __future__ import annotations

from torch import nn


def trainable_model(encoder) -> nn.Module:
    """The torch module of ``encoder`` with fp32 weights (training needs full precision).

    Raises
    ------
    ValueError
        The encoder exposes no torch model (say which modes still work).
    """
    model = getattr(encoder, "module", None) or getattr(encoder, "model", None)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"{encoder.model_id}: this encoder exposes no torch model; prompt learning and "
            "partial/full fine-tuning need an MR-PLIP or open_clip model (use --mode linear)"
        )
    restore = getattr(encoder, "full_precision", None)
    if callable(restore):  # inference keeps a bf16 image tower on CUDA; training needs fp32
        model = restore()
    return model


def find_text_transformer(model: nn.Module) -> nn.Module:
    """The open_clip ``TextTransformer`` inside ``model`` (the module with a token embedding)."""
    for m in model.modules():
        if all(
            hasattr(m, a)
            for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")
        ):
            return m
    raise ValueError(
        f"prompt learning needs an open_clip-style text transformer; {type(model).__name__} has none"
    )


def find_vision_transformer(model: nn.Module) -> nn.Module:
    """The open_clip ``VisionTransformer`` (or another tower with ``.transformer.resblocks``)."""
    for name in ("visual", "vision", "vision_tower"):
        tower = getattr(model, name, None)
        if isinstance(tower, nn.Module):
            break
    else:
        raise ValueError(
            f"{type(model).__name__}: no vision tower (visual / vision) to fine-tune; "
            "partial/full fine-tuning needs an MR-PLIP checkpoint: use --mode linear"
        )
    for m in tower.modules():
        if hasattr(m, "transformer") and hasattr(m.transformer, "resblocks"):
            return m
    return tower  # a non-transformer tower (e.g. frozen-feature adapter): train all of it
