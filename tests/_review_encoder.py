"""Test helper: a tiny randomly initialised open_clip CLIP behind the EncoderBackend protocol.

Used by the review tests where only the plumbing matters (shapes, caching, ranking order
given fixed embeddings), never for claims about what a trained model recognises.
"""

from __future__ import annotations

import numpy as np

# Imported here, at collection time, on purpose: open_clip pulls torchvision -> torch._dynamo ->
# triton, and importing triton's LLVM-based extension *after* a napari viewer has created a
# Mesa (llvmpipe) GL context segfaults under Xvfb. Importing it before any viewer is safe.
import open_clip  # noqa: F401, E402

from napari_mrplip.models.protocol import EncoderBase


class TinyClipEncoder(EncoderBase):
    """A real open_clip CLIP with 1-layer towers, 32-d embeddings and 32 px input."""

    def __init__(self, seed: int = 0, input_size: int = 32):
        import torch
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg
        from open_clip.tokenizer import SimpleTokenizer

        torch.manual_seed(seed)
        vision = CLIPVisionCfg(
            layers=1, width=32, head_width=16, patch_size=8, image_size=input_size
        )
        text = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
        self.model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()
        self.tokenizer = SimpleTokenizer(context_length=16)
        self.model_id = f"tiny-clip-{seed}"
        self.input_size, self.embed_dim, self.context_length = input_size, 32, 16
        self.logit_scale, self.device = 100.0, "cpu"
        self.image_encode_calls, self.is_mrplip = 0, False

    def encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        self.image_encode_calls += 1
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", antialias=True)
        with torch.no_grad():
            return (
                self.model.encode_image((x - 0.5) / 0.25, normalize=True).numpy().astype(np.float32)
            )

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return (
                self.model.encode_text(self.tokenizer(texts), normalize=True)
                .numpy()
                .astype(np.float32)
            )
