"""Small deterministic configs and batches for tests and benchmarks (no data files needed)."""

from __future__ import annotations

import torch

from napari_mrplip.models.batch import BagBatch
from napari_mrplip.models.config import MRPLIPConfig, load_config
from napari_mrplip.models.tokenizer import get_tokenizer

_WORDS = (
    "dense nuclei",
    "pink stroma",
    "adipose tissue",
    "brown dab positive nuclei",
    "background",
    "tumor cells",
    "lymphocytes",
    "necrosis",
)


def micro_config(**overrides) -> MRPLIPConfig:
    """A very small MR-PLIP (32 px, 2-layer towers, width 64) for fast unit tests."""
    raw = load_config("mrplip-tiny").to_dict()
    raw.update(name="mrplip-micro", embed_dim=64, image_size=32, context_length=32)
    raw["vision"].update(layers=2, width=64, head_width=32, patch_size=8)
    raw["text"].update(layers=2, width=64, heads=2, token_embed_dim=32)
    raw["fusion"].update(layers=1, width=64, heads=2, visual_tokens=4)
    raw["mrtva"].update(proj_dim=64, pred_dim=16)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict) and key != "loss_weights":
            raw[key].update(value)
        else:
            raw[key] = value
    return MRPLIPConfig.from_dict(raw)


def bag_layout(n_mags: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mag_index, parent_index)`` of a bag with 1 + 4 + 16 ... tiles over ``n_mags``."""
    mags, parents, level_start = [0], [-1], [0]
    for m in range(1, n_mags):
        start = len(mags)
        for p in range(level_start[-1], start):
            mags += [m] * 4
            parents += [p] * 4
        level_start.append(start)
    return torch.tensor(mags), torch.tensor(parents)


def random_batch(
    cfg: MRPLIPConfig,
    batch_size: int = 4,
    n_mags: int = 2,
    n_keywords: int = 5,
    image_px: int | None = None,
    seed: int = 0,
) -> BagBatch:
    """A random but well-formed ``BagBatch`` with real tokenised captions and keywords.

    Tiles are random RGB; captions combine two vocabulary phrases per tile; each bag has
    ``n_keywords`` slots, the last one padded (``keyword_mask`` False) when there are >2.
    For ``vision.kind == "features"`` configs, random ``features`` are included.
    """
    g = torch.Generator().manual_seed(seed)
    mag_index, parent_index = bag_layout(n_mags)
    n = mag_index.numel()
    px = image_px or cfg.image_size
    images = torch.randint(0, 256, (batch_size, n, px, px, 3), generator=g, dtype=torch.uint8)
    pick = torch.randint(0, len(_WORDS), (batch_size, n, 2), generator=g).tolist()
    captions = [
        f"{_WORDS[a]} and {_WORDS[b]} at magnification {m}"
        for row in pick
        for (a, b), m in zip(row, mag_index.tolist())
    ]
    tok = get_tokenizer(cfg.context_length)
    caption_tokens = tok(captions).view(batch_size, n, -1)
    kw = torch.randint(0, len(_WORDS), (batch_size, n_keywords), generator=g).tolist()
    keyword_tokens = tok([_WORDS[i] for row in kw for i in row], cfg.keyword_context_length)
    keyword_mask = torch.ones(batch_size, n_keywords, dtype=torch.bool)
    if n_keywords > 2:
        keyword_mask[:, -1] = False
        keyword_tokens.view(batch_size, n_keywords, -1)[:, -1] = 0
    features = None
    if cfg.vision.kind == "features":
        features = torch.randn(batch_size, n, cfg.vision.feature_dim, generator=g)
    return BagBatch(
        images=images,
        mag_index=mag_index,
        parent_index=parent_index,
        caption_tokens=caption_tokens,
        keyword_tokens=keyword_tokens.view(batch_size, n_keywords, -1),
        keyword_mask=keyword_mask,
        features=features,
    )
