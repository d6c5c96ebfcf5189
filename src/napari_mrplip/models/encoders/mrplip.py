"""MR-PLIP backend: our checkpoint directories and the embedded ``mrplip-demo`` model."""

from __future__ import annotations

import numpy as np
import torch

from napari_mrplip.models.encoders.base import TorchEncoder, normalise_tiles, pick_device
from napari_mrplip.models.encoders.weights import weights_fingerprint
from napari_mrplip.models.errors import ModelLoadError
from napari_mrplip.models.vocabulary import TrainingVocabulary


class MRPLIPEncoder(TorchEncoder):
    """``EncoderBackend`` over an ``MRPLIP`` model; tiles embed to its projected image embedding."""

    is_mrplip = True
    #: Patch tokens per tile side (``image_size / patch_size``; 0 = no dense maps).
    dense_grid = 0

    def encode_tiles_dense(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image pass -> tile and patch-token embeddings.

        Returns
        -------
        tiles_emb : np.ndarray
            ``(B, D)`` float32, L2-normalised (equal to :meth:`encode_tiles`).
        dense : np.ndarray
            ``(B, g, g, D)`` float16, L2-normalised patch tokens projected into the shared
            space (g = image size / patch size, 7 for mrplip-tiny).
        """
        arr = np.asarray(tiles)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 tiles (B, H, W, 3), got {arr.dtype} {arr.shape}")
        self.image_encode_calls += 1
        model = self.full_precision()
        with torch.inference_mode(), self._ctx():
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
            x = normalise_tiles(x, self.input_size, self.mean, self.std)
            pooled, dense = model.encode_image_dense(x)
        dense = dense.float().cpu().numpy().astype(np.float16)
        return pooled.float().cpu().numpy().astype(np.float32), dense


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
    if cfg.vision.kind == "vit":
        enc.dense_grid = cfg.image_size // cfg.vision.patch_size
    return enc
