"""Shared fixtures: the real public slides, shipped with the repository.

The H&E slide is the package's sample (``src/napari_mrplip/_napari/sample``); the two Ki67 /
H&E OME-TIFFs are in ``tests/data`` (see ``tests/data/ATTRIBUTION.md``). Setting
``MRPLIP_SHARED_DATA`` reads all three from that folder instead; nothing needs ``../shared``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
SAMPLE = ROOT / "src" / "napari_mrplip" / "_napari" / "sample"
_ENV = os.environ.get("MRPLIP_SHARED_DATA")
SHARED_DATA = Path(_ENV) if _ENV else TEST_DATA

CMU_SVS = SHARED_DATA / "CMU-1-Small-Region.svs" if _ENV else SAMPLE / "CMU-1-Small-Region.svs"
OS1_OME = SHARED_DATA / "OS-1-detail.ome.tif"
OS2_OME = SHARED_DATA / "OS-2-ndpi.ome.tif"
SHARED_SLIDES = [CMU_SVS, OS1_OME, OS2_OME]


@pytest.fixture(autouse=True)
def _user_home(tmp_path_factory, monkeypatch):
    """Every test writes its user data (model catalogue, stated µm/px, review sidecars) to a
    temporary ``MRPLIP_HOME``, never to the real home; subprocesses inherit it."""
    monkeypatch.setenv("MRPLIP_HOME", str(tmp_path_factory.mktemp("mrplip-home")))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test slide missing: {path} (it ships in tests/data or the package sample)")
    return path


@pytest.fixture
def cmu_svs() -> Path:
    return _need(CMU_SVS)


@pytest.fixture
def os1_ome() -> Path:
    return _need(OS1_OME)


@pytest.fixture
def os2_ome() -> Path:
    return _need(OS2_OME)


@pytest.fixture(params=SHARED_SLIDES, ids=lambda p: p.name)
def shared_slide(request) -> Path:
    return _need(request.param)


@pytest.fixture(scope="session")
def no_mpp_slide(tmp_path_factory) -> Path:
    """A 1536 x 1536 px crop of the sample H&E slide written as a tiled pyramidal OME-TIFF
    with no pixel size (like a TCGA export or a plain TIFF): ``open_slide(...).mpp is None``.
    Copy it (``shutil.copy2``) before stating a µm/px if the test must not share it."""
    from napari_mrplip.io import open_slide
    from napari_mrplip.io.writers import write_pyramid

    with open_slide(_need(CMU_SVS)) as src:
        img = src.read_region(0, 0, 1536, 1536)
    return write_pyramid(tmp_path_factory.mktemp("nompp") / "no-mpp.ome.tif", img, tile=256)

