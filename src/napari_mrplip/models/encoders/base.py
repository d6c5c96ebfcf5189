"""Shared machinery for torch encoder backends: device, precision, batching, counters."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from napari_mrplip.models.errors import NoTextTowerError
from napari_mrplip.models.protocol import EncoderBase

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(device: str | None) -> str:
    """``device`` as given, or ``"cuda"`` when available, else ``"cpu"``."""
    if device:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_dtype(device: str, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: run in float32).

    ``"auto"``: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not device.startswith("cuda") or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def normalise_tiles(
    tiles: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> float ``(B, 3, size, size)`` normalised with mean/std."""
    x = tiles.permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s


class TorchEncoder(EncoderBase):
    """An ``EncoderBackend`` over two torch callables.

    Subclasses (or callers) supply ``image_fn`` (normalised ``(B, 3, S, S)`` -> ``(B, D)``),
    ``text_fn`` (``list[str]`` -> ``(P, D)``) and the model's preprocessing constants.
    Outputs are float32 numpy arrays with L2-normalised rows.

    Attributes
    ----------
    image_encode_calls : int
        Number of ``encode_tiles`` calls so far (tests use it to check caching).
    is_mrplip : bool
        True for our own models (multi-magnification aware).
    vocabulary : TrainingVocabulary or None
        Words the model was trained on (our checkpoints' ``vocabulary.json``).
    source : str
        The directory the weights were loaded from.
    load_report : LoadReport or None
        Missing/unexpected keys of the foreign weights file (``weights.LoadReport``).
    has_text : bool
        False for vision-only tile encoders (UNI, Virchow, ...): ``encode_text`` raises
        ``NoTextTowerError`` with ``no_text_reason``.
    """

    is_mrplip = False
    #: ``models.vocabulary.TrainingVocabulary`` of our own checkpoints; None for external
    #: models (their training text is unknown, so prompts are never flagged).
    vocabulary = None

    def __init__(
        self,
        *,
        model_id: str,
        image_fn: Callable[[torch.Tensor], torch.Tensor],
        text_fn: Callable[[list[str]], torch.Tensor] | None,
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        embed_dim: int,
        logit_scale: float,
        context_length: int,
        device: str,
        precision: str = "auto",
        module: torch.nn.Module | None = None,
        source: str = "",
        load_report=None,
        no_text_reason: str = "",
    ):
        self.model_id = model_id
        self._image_fn, self._text_fn = image_fn, text_fn
        self.input_size = int(input_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.embed_dim = int(embed_dim)
        self.logit_scale = float(logit_scale)
        self.context_length = int(context_length)
        self.device = device
        self.precision = precision
        self._amp_dtype = autocast_dtype(device, precision)
        self.module = module
        self.source = source
        self.load_report = load_report
        self.no_text_reason = no_text_reason
        self.image_encode_calls = 0
        self._fp32_visual: torch.nn.Module | None = None
        vision = getattr(module, "visual", None)
        if self._amp_dtype is not None and isinstance(vision, torch.nn.Module):
            # bf16 weights measured 1.5x faster than autocast on an H200 (docs/performance.md);
            # the float32 tower waits in host memory for training (``full_precision``)
            module.visual = copy.deepcopy(vision).to(self._amp_dtype)
            self._fp32_visual = vision.to("cpu")

    def full_precision(self) -> torch.nn.Module | None:
        """The model with its float32 image tower back in place (for training); returns it."""
        if self._fp32_visual is not None:
            self.module.visual = self._fp32_visual.to(self.device)
            self._fp32_visual = None
        return self.module

    def _half_vision(self) -> torch.dtype | None:
        """The image tower's dtype when it holds half-precision weights (then no autocast).

        Inference runs a bf16/fp16 copy of ``module.visual`` on CUDA: autocast keeps LayerNorm,
        softmax and the residual stream in float32, which costs 1.5x in throughput. Training
        code takes the model through :meth:`full_precision`, which puts the untouched float32
        tower back; encoding then uses autocast.
        """
        vision = getattr(self.module, "visual", None)
        if not isinstance(vision, torch.nn.Module):
            return None
        p = next(vision.parameters(), None)
        return p.dtype if p is not None and p.dtype in (torch.bfloat16, torch.float16) else None

    def _ctx(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self._amp_dtype)

    def encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 ``(B, H, W, 3)`` -> float32 ``(B, D)``, rows L2-normalised."""
        arr = np.asarray(tiles)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 tiles (B, H, W, 3), got {arr.dtype} {arr.shape}")
        self.image_encode_calls += 1
        if arr.shape[0] == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device, non_blocking=True)
            x = normalise_tiles(x, self.input_size, self.mean, self.std)
            half = self._half_vision()
            if half is not None:
                try:
                    return _to_numpy(self._image_fn(x.to(half)))
                except RuntimeError as e:  # a head outside ``visual`` kept float32 weights
                    if "out of memory" in str(e).lower():
                        raise
                    log.warning("%s: half-precision image tower failed (%s); using autocast",
                                self.model_id, e)  # fmt: skip
                    self.full_precision()
            with self._ctx():
                return _to_numpy(self._image_fn(x))

    @property
    def has_text(self) -> bool:
        return self._text_fn is not None

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """``P`` texts -> float32 ``(P, D)``, rows L2-normalised."""
        if self._text_fn is None:
            raise NoTextTowerError(self.no_text_reason or f"{self.model_id} has no text tower")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        with torch.inference_mode(), self._ctx():
            out = self._text_fn(texts)
        return _to_numpy(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, device={self.device!r})"


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return F.normalize(x.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)
