"""Shared fixtures: the real public slides in ../shared/data and small generated pyramids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MRPLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))

CMU_SVS = SHARED_DATA / "CMU-1-Small-Region.svs"
OS1_OME = SHARED_DATA / "OS-1-detail.ome.tif"
OS2_OME = SHARED_DATA / "OS-2-ndpi.ome.tif"
SHARED_SLIDES = [CMU_SVS, OS1_OME, OS2_OME]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test slide missing: {path} (set MRPLIP_SHARED_DATA)")
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
