"""The encoder-backend contract shared by MR-PLIP and published models.

This module imports neither torch nor napari: the heatmap engine and the review
package type against it without pulling a deep-learning stack at import time.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class EncoderBackend(Protocol):
    """Turns RGB tiles and text into one L2-normalised embedding space.

    Attributes
    ----------
    model_id : str
        Stable identifier of the weights (used as an embedding-cache key).
    input_size : int
        Square tile side in pixels the model expects.
    embed_dim : int
        Embedding dimension D.
    logit_scale : float
        Multiplier for cosine similarities before a softmax (CLIP's exp(t)).
    context_length : int
        Maximum number of text tokens.
    device : str
        Torch device string the model runs on (``"cpu"``, ``"cuda:0"``).
    """

    model_id: str
    input_size: int
    embed_dim: int
    logit_scale: float
    context_length: int
    device: str

    def encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Embed tiles.

        Parameters
        ----------
        tiles : np.ndarray
            ``(B, H, W, 3)`` uint8 RGB; resized to ``input_size`` if needed.

        Returns
        -------
        np.ndarray
            ``(B, D)`` float32, rows L2-normalised.
        """
        ...

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Embed texts: ``(P, D)`` float32, rows L2-normalised."""
        ...
