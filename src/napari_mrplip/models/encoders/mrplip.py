"""MR-PLIP backend: our checkpoint directories and the embedded ``mrplip-demo`` model."""

from __future__ import annotations

from napari_mrplip.models.encoders.base import TorchEncoder, pick_device
from napari_mrplip.models.encoders.weights import weights_fingerprint
from napari_mrplip.models.errors import ModelLoadError
from napari_mrplip.models.vocabulary import TrainingVocabulary


class MRPLIPEncoder(TorchEncoder):
    """``EncoderBackend`` over an ``MRPLIP`` model; tiles embed to its projected image embedding."""

    is_mrplip = True


def detect(spec: str) -> bool:
    from napari_mrplip.models.checkpoint import is_checkpoint_dir, resolve_checkpoint

    return spec == "mrplip-demo" or is_checkpoint_dir(resolve_checkpoint(spec))


def load(spec: str, device: str | None = None, precision: str = "auto") -> MRPLIPEncoder:
    """Load an MR-PLIP checkpoint directory (or ``"mrplip-demo"``) as an encoder."""
    from napari_mrplip.models.checkpoint import WEIGHTS_FILE, load_model, resolve_checkpoint
    from napari_mrplip.models.tokenizer import get_tokenizer

    device = pick_device(device)
    model = load_model(spec, device=device)
    cfg = model.config
    if model.uses_features:
        raise ModelLoadError(
            f"{spec}: this MR-PLIP model reads precomputed features of an external tile "
            "encoder (vision.kind='features') and cannot embed RGB tiles by itself; "
            "embed tiles with that encoder and call model.encode_image(features)"
        )
    tok = get_tokenizer(cfg.context_length)
    root = resolve_checkpoint(spec)

    def text_fn(texts: list[str]):
        return model.encode_text(tok(texts).to(device))

    enc = MRPLIPEncoder(
        model_id=f"mrplip:{root.name}:{weights_fingerprint(root / WEIGHTS_FILE)}",
        image_fn=lambda x: model.encode_image(x),
        text_fn=text_fn,
        input_size=cfg.image_size,
        mean=cfg.image_mean,
        std=cfg.image_std,
        embed_dim=cfg.embed_dim,
        logit_scale=float(model.get_logit_scale().detach()),
        context_length=cfg.context_length,
        device=device,
        precision=precision,
        module=model,
        source=str(root),
    )
    enc.vocabulary = TrainingVocabulary.load(root)
    return enc
