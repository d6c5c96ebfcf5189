"""Prompt ensembles (templates x synonyms) with an embedding cache keyed by string.

The text side of zero-shot scoring (the scoring side is :mod:`.zeroshot`); heatmaps, review,
fine-tuning initialisation and evaluation all embed prompts here. torch-free.

A prompt entry may hold synonyms separated by ``|`` ("tumour|carcinoma"). Each synonym is
put into every template, every text is embedded and L2-normalised, all are averaged and the
mean is renormalised: one vector per entry (CONCH / MI-Zero practice).

Prompts longer than the model's context are **truncated by the text encoder with a
warning** (CLIP text towers keep the first ``context_length`` tokens); the warning names the
prompt so the user can shorten it.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Sequence

import numpy as np

#: The one template list, wrapped around each synonym. Where it comes from: CONCH's zero-shot
#: recipe (Lu et al., Nature Medicine 2024) averages a class name over about 20 photomicrograph /
#: histopathology phrasings (MI-Zero practice). We keep six in our own wording: the bare name,
#: the two most generic image phrasings, the two histopathology ones and "{} tissue". Why these:
#: each adds at most 6 tokens, so a 10-word prompt still fits a 77-token CLIP context; six keep
#: a new prompt to one small text batch (the heatmap re-scores as the user types); and the
#: figures in docs/heatmaps.md and docs/review.md are measured with exactly this list.
TEMPLATES: tuple[str, ...] = (
    "{}.",
    "a photomicrograph showing {}.",
    "an H&E stained image of {}.",
    "a histopathological image of {}.",
    "an image of {}.",
    "{} tissue.",
)

_TOKEN_RE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class PromptError(ValueError):
    """The prompt list cannot be scored (empty, or an entry with no text)."""


def split_synonyms(entry: str) -> list[str]:
    """``"tumour | carcinoma"`` -> ``["tumour", "carcinoma"]`` (empty parts dropped)."""
    return [s.strip() for s in entry.split("|") if s.strip()]


def validate_prompts(prompts: Sequence[str], background: Sequence[str] = ()) -> None:
    """Raise :class:`PromptError` for an empty list or an entry without text."""
    if not prompts:
        raise PromptError("no prompts given: type at least one prompt (e.g. 'tumour')")
    for p in list(prompts) + list(background):
        if not split_synonyms(p):
            raise PromptError(f"prompt {p!r} has no text; remove it or type a word")


def estimate_tokens(text: str) -> int:
    """Lower bound on CLIP BPE tokens of ``text``, start/end tokens included."""
    return len(_TOKEN_RE.findall(text)) + 2


class PromptEmbedder:
    """Turns prompt entries into ensemble vectors, caching every text it embedded.

    Parameters
    ----------
    encoder : EncoderBackend
        Supplies ``encode_text`` and ``context_length``.
    templates : sequence of str
        Each holds one ``{}``; ``("{}",)`` turns ensembling off.
    """

    def __init__(self, encoder, templates: Sequence[str] = TEMPLATES):
        self.encoder = encoder
        self.templates = tuple(templates)
        self._text: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.text_encode_calls = 0

    def texts_for(self, entry: str) -> list[str]:
        """All template x synonym texts of one entry."""
        return [t.format(s) for s in split_synonyms(entry) for t in self.templates]

    def embed(self, entries: Sequence[str]) -> np.ndarray:
        """``(P, D)`` float32, one L2-normalised ensemble vector per entry."""
        return self.embed_synonyms([split_synonyms(e) for e in entries], names=entries)

    def embed_synonyms(
        self, synonyms: Sequence[Sequence[str]], names: Sequence[str] | None = None
    ) -> np.ndarray:
        """``(P, D)`` float32 ensemble vectors, one per list of synonyms (templates x synonyms).

        ``names`` (default: the synonyms joined by ``|``) only name entries in warnings.
        """
        if not synonyms or any(not s for s in synonyms):
            raise PromptError("give at least one class, each with at least one name")
        texts_per = [[t.format(s) for s in syn for t in self.templates] for syn in synonyms]
        names = list(names) if names is not None else ["|".join(s) for s in synonyms]
        self._warn_long(names, texts_per)
        with self._lock:
            missing = list(dict.fromkeys(t for ts in texts_per for t in ts if t not in self._text))
            if missing:
                emb = np.asarray(self.encoder.encode_text(missing), np.float32)
                self.text_encode_calls += 1
                self._text.update(zip(missing, emb))
            vecs = [np.mean([_l2(self._text[t]) for t in ts], axis=0) for ts in texts_per]
        return _l2(np.stack(vecs).astype(np.float32))

    def _warn_long(self, entries, texts_per) -> None:
        limit = int(self.encoder.context_length or 77)

        def count(text: str) -> int:
            n = self.encoder.count_tokens(text)
            return estimate_tokens(text) if n is None else int(n)

        for entry, texts in zip(entries, texts_per):
            longest = max(count(t) for t in texts)
            if longest > limit:
                warnings.warn(
                    f"prompt {entry!r} is longer than the model's {limit}-token context "
                    f"(about {longest} tokens with its template) and is truncated; shorten it "
                    "to keep its end.",
                    UserWarning,
                    stacklevel=3,
                )
