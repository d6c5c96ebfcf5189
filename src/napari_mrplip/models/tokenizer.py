"""Offline text tokenizer: open_clip's bundled CLIP BPE vocabulary plus one [MASK] token.

Ids follow open_clip's ``SimpleTokenizer``: 0 pads, 49406 starts and 49407 ends a text;
MR-PLIP adds ``mask_token_id = 49408`` for masked language modelling, so the text tower's
vocabulary has 49409 rows. Published CLIP models never see the mask id.
"""

from __future__ import annotations

from functools import lru_cache

import torch

PAD_ID = 0
BPE_VOCAB_SIZE = 49408
MASK_TOKEN_ID = BPE_VOCAB_SIZE


class Tokenizer:
    """Callable tokenizer ``tok(texts, context_length=None) -> LongTensor (N, L)``.

    Parameters
    ----------
    context_length : int
        Default number of tokens per text (start and end tokens included; longer texts
        are truncated keeping the end token, shorter ones padded with 0).
    """

    pad_id = PAD_ID
    mask_token_id = MASK_TOKEN_ID
    vocab_size = BPE_VOCAB_SIZE + 1

    def __init__(self, context_length: int = 77):
        from open_clip.tokenizer import SimpleTokenizer

        if context_length < 3:
            raise ValueError(f"context_length must be >= 3, got {context_length}")
        self.context_length = int(context_length)
        self._bpe = SimpleTokenizer(context_length=self.context_length)
        self.sot_token_id = int(self._bpe.sot_token_id)
        self.eot_token_id = int(self._bpe.eot_token_id)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that are never masked: pad, start, end, mask."""
        return (PAD_ID, self.sot_token_id, self.eot_token_id, MASK_TOKEN_ID)

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        """Tokenise ``texts`` into a ``(N, L)`` int64 tensor."""
        if isinstance(texts, str):
            texts = [texts]
        length = int(context_length or self.context_length)
        return self._bpe(list(texts), context_length=length).long()

    def decode(self, tokens: torch.Tensor | list[int]) -> str:
        """Inverse of ``__call__`` for one row (special tokens dropped)."""
        ids = [int(t) for t in tokens]
        ids = [t for t in ids if t not in self.special_ids]
        return self._bpe.decode(ids).strip()


@lru_cache(maxsize=8)
def get_tokenizer(context_length: int = 77) -> Tokenizer:
    """A shared tokenizer for ``context_length`` (loading the BPE merges takes ~0.3 s)."""
    return Tokenizer(context_length)
