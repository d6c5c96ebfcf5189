"""Test helper: a real (random-weight) tiny open_clip model behind the EncoderBackend protocol.

Not library code: it stands in for ``models.encoders.get_encoder`` so that the heatmap
engine is tested against a real torch image/text tower without downloads.
"""

from __future__ import annotations

import numpy as np

from napari_mrplip.models.protocol import EncoderBase


class TinyClipEncoder(EncoderBase):
    """A random tiny open_clip CLIP (ViT 32 px, width 64) implementing EncoderBackend."""

    def __init__(self, input_size: int = 32, embed_dim: int = 32, seed: int = 0, is_mrplip=False):
        import open_clip
        import torch

        torch.manual_seed(seed)
        vision = {
            "image_size": input_size,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 32,
        }
        text = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
        self.model = open_clip.CLIP(embed_dim, vision, text).eval()
        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")
        self.model_id = f"tiny-clip-{input_size}-{embed_dim}-seed{seed}"
        self.input_size = input_size
        self.embed_dim = embed_dim
        self.logit_scale = 10.0
        self.context_length = 77
        self.device = "cpu"
        self.is_mrplip = is_mrplip
        self.image_encode_calls = 0
        self.text_encode_calls = 0
        self.tiles_seen = 0
        self._mean = torch.tensor([0.481, 0.458, 0.408]).view(1, 3, 1, 1)
        self._std = torch.tensor([0.269, 0.261, 0.276]).view(1, 3, 1, 1)

    def encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        self.image_encode_calls += 1
        self.tiles_seen += len(tiles)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255
            if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
                x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear")
            e = self.model.encode_image((x - self._mean) / self._std, normalize=True)
        return e.numpy().astype(np.float32)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        self.text_encode_calls += 1
        with torch.inference_mode():
            e = self.model.encode_text(self.tokenizer(texts), normalize=True)
        return e.numpy().astype(np.float32)
