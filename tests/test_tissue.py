"""The one tissue detector against an independent full-resolution reference.

Reference (made without the detector's code or thumbnail): colour deconvolution (scikit-image
``rgb2hed``) and local texture (15 x 15 brightness standard deviation) at full resolution; a
pixel is tissue when its stain density exceeds that of the slide's brightest 3 % by 0.005 or
its texture exceeds 3 grey levels. Glass is what is left, in regions at least 50 µm across
(a lumen inside tissue is not "glass" a tile could sit on). Per thumbnail cell: tissue when at
least half its pixels are, glass when at most 5 % are. The detector must cover >= 90 % of the
reference tissue and <= 5 % of the reference glass, on every shared slide and on a pale IHC
slide made by fading the haematoxylin of the Ki67 slide.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import label, uniform_filter
from skimage.color import hed2rgb, rgb2hed

from napari_mrplip.io import open_slide
from napari_mrplip.tiling.tissue import tissue_mask

THUMB_PX = 640


def pale_ihc(img: np.ndarray, factor: float = 0.25) -> np.ndarray:
    """Fade the haematoxylin counterstain of an IHC image to ``factor`` of its density."""
    hed = rgb2hed(img)
    hed[..., 0] *= factor
    return (np.clip(hed2rgb(hed), 0, 1) * 255 + 0.5).astype(np.uint8)


def reference(img: np.ndarray, mpp: float) -> np.ndarray:
    """Full-resolution tissue (True) / glass (False) by colour deconvolution and texture."""
    density = np.clip(rgb2hed(img), 0, None).sum(axis=-1)
    grey = img.mean(axis=-1)
    mean = uniform_filter(grey, 15)
    texture = np.sqrt(np.maximum(uniform_filter(grey * grey, 15) - mean * mean, 0))
    glass_density = np.median(density[grey >= np.percentile(grey, 97)])
    tissue = (density > glass_density + 0.005) | (texture > 3)
    labels, _ = label(~tissue)
    sizes = np.bincount(labels.ravel())
    small = sizes < (50 / mpp) ** 2
    small[0] = False
    return tissue | small[labels]


def _cells(x: np.ndarray, f: int) -> np.ndarray:
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    return x[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def agreement(img: np.ndarray, mpp: float) -> tuple[float, float, int]:
    """(tissue covered, glass flagged, glass cells) of the detector vs the reference."""
    f = max(1, -(-max(img.shape[:2]) // THUMB_PX))
    frac = _cells(reference(img, mpp).astype(np.float32), f)
    mask = tissue_mask(np.asarray(Image.fromarray(img).reduce(f)))[: frac.shape[0], : frac.shape[1]]
    tissue, glass = frac >= 0.5, frac <= 0.05
    covered = float(mask[tissue].mean())
    flagged = float(mask[glass].mean()) if glass.any() else 0.0
    return covered, flagged, int(glass.sum())


def _whole(path):
    s = open_slide(path)
    w, h = s.dimensions
    return s.read_region(0, 0, w, h, 0), s.mpp or 0.5


def test_tissue_on_every_shared_slide(shared_slide):
    img, mpp = _whole(shared_slide)
    covered, flagged, _ = agreement(img, mpp)
    assert covered >= 0.90 and flagged <= 0.05, (covered, flagged)


def test_tissue_on_pale_ihc(os2_ome):
    img, mpp = _whole(os2_ome)
    faded = pale_ihc(img)
    assert faded.mean() > img.mean() + 10  # visibly paler
    covered, flagged, glass = agreement(faded, mpp)
    assert glass > 1000 and covered >= 0.90 and flagged <= 0.05, (covered, flagged)


def test_black_border_and_pen_marks_are_not_tissue(cmu_svs):
    img, _ = _whole(cmu_svs)
    img = img.copy()
    painted = np.zeros(img.shape[:2], bool)
    h, w = painted.shape
    img[:, :120] = (12, 12, 12)  # scanner's black border
    painted[:, :120] = True
    for colour, y in (((30, 150, 60), h // 5), ((30, 60, 170), h // 3)):  # green, blue ink
        img[y : y + 60, w // 4 : w - 200] = colour
        painted[y : y + 60, w // 4 : w - 200] = True
    f = max(1, -(-max(h, w) // THUMB_PX))
    mask = tissue_mask(np.asarray(Image.fromarray(img).reduce(f)))
    ink = _cells(painted.astype(np.float32), f) >= 0.99
    mask = mask[: ink.shape[0], : ink.shape[1]]
    assert ink.sum() > 500 and mask[ink].mean() <= 0.05


@pytest.mark.parametrize("shade", [0, 255])
def test_uniform_glass_or_black_has_no_tissue(shade):
    assert not tissue_mask(np.full((64, 64, 3), shade, np.uint8)).any()


TINY_MODEL = {
    "name": "mrplip-test", "embed_dim": 32, "image_size": 32, "context_length": 48,
    "keyword_context_length": 8,
    "vision": {"kind": "vit", "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text": {"layers": 1, "width": 32, "heads": 2}, "fusion": {"layers": 1, "width": 32, "heads": 2},
    "mrtva": {"proj_dim": 32, "pred_dim": 16},
}  # fmt: skip


def _pretrain(tmp_path, slide, *extra):
    import json

    from napari_mrplip.train import cli

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_MODEL))
    argv = ["--config", str(cfg), "--slides", str(slide), "--out", str(tmp_path / "run"),
            "--max-steps", "1", "--batch-size", "2", "--device", "cpu", "--threads", "1",
            "--no-progress-bar", "--no-register", *extra]  # fmt: skip
    return cli.main(argv)


def test_pretrain_with_default_bags_runs_on_the_pale_ihc_slide(os2_ome, tmp_path, monkeypatch):
    from napari_mrplip.io.writers import write_pyramid

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    img, mpp = _whole(os2_ome)
    pale = write_pyramid(tmp_path / "pale.ome.tif", pale_ihc(img), mpp=mpp, compression="zlib")
    assert _pretrain(tmp_path, pale) == 0
    assert (tmp_path / "run" / "final").is_dir()


def test_a_slide_too_small_for_the_largest_bag_says_what_to_change(tmp_path, capsys, monkeypatch):
    from napari_mrplip.io.writers import write_pyramid

    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path / "home"))
    small = write_pyramid(tmp_path / "small.ome.tif", np.full((200, 200, 3), 180, np.uint8), mpp=0.5)
    assert _pretrain(tmp_path, small, "--tile-px", "224") != 0
    err = capsys.readouterr().err
    assert "largest bag" in err and "--magnifications 10 20" in err and "--tile-px" in err
