"""Fine-tuned checkpoints: a base encoder plus trained class embeddings (and vision weights).

Directory layout (written by ``finetune.run``, read here)::

    finetune_config.json   {"format": "mrplip-finetuned", "version": 1, "base_model": SPEC,
                            "mode": "linear"|"prompt"|"partial"|"full", "class_names": [...],
                            "logit_scale": s, "metrics": {...}, "config": {...}}
    head.safetensors       class_embeddings (C, D) float32, unit rows
    prompt.safetensors     ctx (n_ctx, W): learned context tokens (prompt mode)
    vision.safetensors     trained parameters of the base model's vision tower (partial/full),
                           keyed by their names in the base model's ``state_dict``

``get_encoder(path)`` returns a :class:`FinetunedEncoder`: tiles are embedded by the base
model (with the trained vision weights), and the class names *are* its prompts: their text
embedding is the trained class vector, so ``cosine x logit_scale`` reproduces the head.
Any other text goes through the base text tower.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from napari_mrplip.models.protocol import EncoderBase

CONFIG_FILE = "finetune_config.json"
HEAD_FILE = "head.safetensors"
PROMPT_FILE = "prompt.safetensors"
VISION_FILE = "vision.safetensors"
FORMAT = "mrplip-finetuned"
VERSION = 1
#: Words prompt templates wrap around a class name ("an H&E stained image of stroma."):
#: such a text still means the class and gets its trained vector.
TEMPLATE_WORDS = frozenset(
    "a an the of in with showing shows image images photo photomicrograph histopathological "
    "histopathology histology h&e stained tissue slide patch region".split()
)
#: Most classes a checkpoint may declare (bounds what a malformed file makes us allocate).
MAX_CLASSES = 10_000


def is_finetuned_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a fine-tuned checkpoint (cheap, never raises)."""
    try:
        return (Path(path) / CONFIG_FILE).is_file()
    except (OSError, TypeError, ValueError):
        return False


def read_meta(path: str | Path) -> dict:
    """Parse and validate ``finetune_config.json``; ValueError naming the file otherwise."""
    cfg_path = Path(path) / CONFIG_FILE
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{cfg_path}: cannot read the fine-tuned checkpoint's config ({e})") from e
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: not a fine-tuned checkpoint (format must be {FORMAT!r})")
    if not (
        isinstance(names, list)
        and 2 <= len(names) <= MAX_CLASSES
        and all(isinstance(n, str) for n in names)
    ):
        raise ValueError(f"{cfg_path}: 'class_names' must be a list of 2..{MAX_CLASSES} strings")
    if not isinstance(meta.get("base_model"), str):
        raise ValueError(f"{cfg_path}: 'base_model' (the base encoder spec) is missing")
    return meta


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename, with the user's umask (``napari_mrplip.outputs``)."""
    from napari_mrplip.outputs import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        write(str(tmp))


def save_finetuned(
    out_dir: str | Path,
    *,
    base_model: str,
    mode: str,
    class_names: list[str],
    class_embeddings: np.ndarray,
    logit_scale: float,
    prompt_ctx=None,
    vision_state: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a fine-tuned checkpoint directory (each file atomically, the config last)."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emb = torch.as_tensor(np.asarray(class_embeddings, np.float32)).contiguous()
    if emb.ndim != 2 or emb.shape[0] != len(class_names):
        raise ValueError(
            f"class_embeddings must be (C={len(class_names)}, D), got {tuple(emb.shape)}"
        )
    _atomic_write(out / HEAD_FILE, lambda p: save_file({"class_embeddings": emb}, p))
    if prompt_ctx is not None:
        ctx = prompt_ctx.detach().float().cpu().contiguous()
        _atomic_write(out / PROMPT_FILE, lambda p: save_file({"ctx": ctx}, p))
    if vision_state:
        state = {k: v.detach().cpu().contiguous() for k, v in vision_state.items()}
        _atomic_write(out / VISION_FILE, lambda p: save_file(state, p))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "base_model": base_model,
        "mode": mode,
        "class_names": list(class_names),
        "logit_scale": float(logit_scale),
        **(extra or {}),
    }
    text = json.dumps(meta, indent=2)
    _atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return out


class FinetunedEncoder(EncoderBase):
    """An :class:`~napari_mrplip.models.protocol.EncoderBackend` over a base encoder and a trained head.

    Attributes
    ----------
    base : EncoderBackend
        The base encoder (its vision weights replaced in partial/full mode).
    class_names : list of str
        The trained classes; also :attr:`prompts`.
    class_embeddings : np.ndarray
        ``(C, D)`` float32 unit rows.
    """

    def __init__(
        self, base, meta: dict, class_embeddings: np.ndarray, path: Path, tuned_vision: bool
    ):
        self.base = base
        self.path = Path(path)
        self.meta = meta
        self.mode = meta.get("mode", "linear")
        self.class_names = tuple(meta["class_names"])
        self.class_embeddings = np.asarray(class_embeddings, np.float32)
        self.logit_scale = float(meta.get("logit_scale", base.logit_scale))
        self.input_size = base.input_size
        self.embed_dim = base.embed_dim
        self.context_length = base.context_length
        self.device = base.device
        self.is_mrplip = bool(base.is_mrplip)
        self.native_mpp = base.native_mpp
        vocab = base.vocabulary  # the head's classes were trained too
        self.vocabulary = None if vocab is None else vocab.extended(self.class_names)
        digest = hashlib.sha1(self.class_embeddings.tobytes()).hexdigest()[:12]
        # Frozen-vision modes embed tiles exactly like the base model: share its cache key.
        self.model_id = f"finetuned:{digest}:{base.model_id}" if tuned_vision else base.model_id
        self._index = {
            " ".join(n.lower().replace(".", " ").split()): i for i, n in enumerate(self.class_names)
        }

    @property
    def prompts(self) -> list[str]:
        """The default prompts: the class names."""
        return list(self.class_names)

    @property
    def image_encode_calls(self) -> int:
        return int(self.base.image_encode_calls)

    def encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 -> ``(B, D)`` float32 unit rows (base vision tower)."""
        return self.base.encode_tiles(tiles)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Class names -> trained class vectors; other texts -> the base text tower. ``(P, D)``."""
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        hits = [self.class_index(t) for t in texts]
        other = [i for i, k in enumerate(hits) if k is None]
        for i, k in enumerate(hits):
            if k is not None:
                out[i] = self.class_embeddings[k]
        if other:
            out[other] = self.base.encode_text([texts[i] for i in other])
        return out

    def class_index(self, text: str) -> int | None:
        """The class a prompt names: a class name alone or wrapped in template words, else None."""
        low = " ".join(text.lower().replace(".", " ").replace(",", " ").split())
        best = None
        for name, k in self._index.items():
            if f" {name} " not in f" {low} ":
                continue
            rest = f" {low} ".replace(f" {name} ", " ", 1).split()
            if all(w in TEMPLATE_WORDS for w in rest) and (
                best is None or len(name) > len(best[0])
            ):
                best = (name, k)
        return None if best is None else best[1]

    def classify(self, tiles: np.ndarray) -> np.ndarray:
        """``(B, C)`` class probabilities of ``(B, H, W, 3)`` uint8 tiles."""
        from napari_mrplip.models.zeroshot import classify

        return classify(self.encode_tiles(tiles), self.class_embeddings, self.logit_scale)


def _load_vision(base, path: Path) -> bool:
    from safetensors.torch import load_file

    file = path / VISION_FILE
    if not file.is_file():
        return False
    module = getattr(base, "module", None) or getattr(base, "model", None)
    if module is None:
        raise ValueError(
            f"{file}: the base encoder exposes no torch model to load tuned vision weights into"
        )
    state = load_file(str(file), device="cpu")
    known = module.state_dict()
    bad = [k for k, v in state.items() if k not in known or known[k].shape != v.shape]
    if bad:
        raise ValueError(
            f"{file}: {len(bad)} tensors do not match the base model (e.g. {bad[0]!r}); wrong base model?"
        )
    module.load_state_dict(state, strict=False)
    return True


def load_finetuned(path: str | Path, device: str | None = None, precision: str = "auto", base=None):
    """Load a fine-tuned checkpoint directory as a :class:`FinetunedEncoder`.

    ``base`` (an already-built base encoder) skips resolving ``base_model`` through
    ``get_encoder`` (used by tests and by training, which holds the base model already).
    """
    from safetensors.numpy import load_file

    path = Path(path)
    meta = read_meta(path)
    if base is None:
        from napari_mrplip.models.encoders import get_encoder

        base = get_encoder(meta["base_model"], device=device, precision=precision)
    try:
        emb = load_file(str(path / HEAD_FILE))["class_embeddings"]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(
            f"{path / HEAD_FILE}: cannot read the trained class embeddings ({e})"
        ) from e
    if emb.shape != (len(meta["class_names"]), base.embed_dim):
        raise ValueError(
            f"{path / HEAD_FILE}: class embeddings {emb.shape} do not match {len(meta['class_names'])} "
            f"classes x the base model's {base.embed_dim}-d embedding"
        )
    tuned = _load_vision(base, path)
    return FinetunedEncoder(base, meta, emb, path, tuned_vision=tuned)


def detect(spec: str) -> bool:
    """``get_encoder`` registry hook: a directory holding ``finetune_config.json``."""
    return is_finetuned_dir(spec)


def load(spec: str, device: str | None = None, precision: str = "auto") -> FinetunedEncoder:
    """``get_encoder`` registry hook (raises ``ModelLoadError`` with the reason)."""
    from napari_mrplip.models.errors import ModelLoadError

    try:
        return load_finetuned(spec, device=device, precision=precision)
    except ModelLoadError:
        raise
    except ValueError as e:
        raise ModelLoadError(str(e)) from e
