"""Image<->text retrieval on captioned tiles (recall@k, as CONCH and QuiltNet report it).

Input: a folder of tile images plus ``captions.json`` mapping each image file name (relative
to the folder) to one caption or a list of captions. Image->text: a query image is a hit
when any of its captions is among the k most similar captions; text->image: a query caption
is a hit when its image is among the k most similar images. Cosine similarity of the
L2-normalised embeddings (ranking does not depend on the logit scale).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_mrplip.evaluation.data import MAX_TILES, EvalDataError, read_image
from napari_mrplip.metrics import recall_at_k
from napari_mrplip.tiling.geometry import resize_rgb as resize_tile

CAPTIONS = "captions.json"
KS = (1, 5, 10)


@dataclass
class CaptionedTiles:
    paths: list[Path]
    captions: list[str]
    caption_image: np.ndarray  # (T,) image index of each caption


def captioned_folder(root: str | Path) -> CaptionedTiles:
    """Read ``root/captions.json`` and check every image it names exists."""
    root = Path(root)
    path = root / CAPTIONS
    try:
        if path.stat().st_size > 64 << 20:
            raise EvalDataError(f"{path} is larger than 64 MiB")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        if isinstance(e, EvalDataError):
            raise
        raise EvalDataError(
            f"cannot read {path}: {e}. Retrieval needs {CAPTIONS} mapping image file -> caption"
        ) from e
    if not isinstance(raw, dict) or not raw or len(raw) > MAX_TILES:
        raise EvalDataError(f'{path}: expected a non-empty object {{"tile.png": "caption"}}')
    paths, captions, owner = [], [], []
    for name, caps in raw.items():
        caps = [caps] if isinstance(caps, str) else caps
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise EvalDataError(f"{path}: the captions of {name!r} must be a string or strings")
        file = (root / name).resolve()
        if not file.is_file() or root.resolve() not in file.parents:
            raise EvalDataError(f"{path}: {name!r} is not an image inside {root}")
        paths.append(file)
        captions += caps
        owner += [len(paths) - 1] * len(caps)
    return CaptionedTiles(paths, captions, np.asarray(owner, np.int64))


def evaluate(encoder, data: CaptionedTiles, batch_size: int = 32, ks=KS) -> dict:
    """Recall@k both ways for one encoder."""
    size = int(encoder.input_size)
    img = []
    for s in range(0, len(data.paths), batch_size):
        batch = [resize_tile(read_image(p), size) for p in data.paths[s : s + batch_size]]
        img.append(np.asarray(encoder.encode_tiles(np.stack(batch)), np.float64))
    img = np.concatenate(img)
    txt = np.concatenate(
        [
            np.asarray(encoder.encode_text(data.captions[s : s + batch_size]), np.float64)
            for s in range(0, len(data.captions), batch_size)
        ]
    )
    sim = img @ txt.T  # (I, T)
    per_image = [set(np.flatnonzero(data.caption_image == i)) for i in range(len(data.paths))]
    out = {"model_id": encoder.model_id, "n_images": len(data.paths), "n_captions": len(txt)}
    for k in ks:
        out[f"image_to_text_R@{k}"] = round(recall_at_k(sim, per_image, k), 6)
        out[f"text_to_image_R@{k}"] = round(recall_at_k(sim.T, data.caption_image, k), 6)
    return out
