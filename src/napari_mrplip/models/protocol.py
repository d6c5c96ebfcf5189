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
    # optional capabilities: declared, with their defaults, by :class:`EncoderBase`
    native_mpp: float | None
    is_mrplip: bool
    class_names: tuple[str, ...]
    has_text: bool
    vocabulary: object | None
    dense_grid: int
    image_encode_calls: int

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` with start/end tokens, or None when the encoder cannot tell."""
        ...

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


class EncoderBase:
    """The optional capabilities of an :class:`EncoderBackend`, declared with their defaults.

    Every encoder inherits this, so consumers read ``encoder.native_mpp`` and friends
    directly: no ``getattr`` probing, and a new capability is added here, once.

    Attributes
    ----------
    native_mpp : float or None
        µm/px the model was trained at (heatmaps score there by default); None: unknown.
    is_mrplip : bool
        Our multi-magnification models (heatmaps fuse parents and children by default).
    class_names : tuple of str
        A trained classification head's classes (fine-tuned checkpoints); empty otherwise.
    has_text : bool
        False for vision-only tile encoders (UNI, Virchow, ...).
    vocabulary : TrainingVocabulary or None
        Words our checkpoints were trained on; None for external models.
    dense_grid : int
        Side of the patch-token grid when dense (sub-tile) maps are available, else 0.
    image_encode_calls : int
        ``encode_tiles`` calls so far (tests count encoder work with it).
    device : str
        Torch device string.
    context_length : int
        Maximum text tokens (CLIP's 77 by default).
    """

    native_mpp: float | None = None
    is_mrplip: bool = False
    class_names: tuple[str, ...] = ()
    has_text: bool = True
    vocabulary: object | None = None
    dense_grid: int = 0
    image_encode_calls: int = 0
    device: str = "cpu"
    context_length: int = 77

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` with start/end tokens; None (estimate instead) by default."""
        return None
