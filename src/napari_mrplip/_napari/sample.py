"""npe2 sample data: a real H&E slide bundled with the package, opened through the reader."""

from __future__ import annotations

from pathlib import Path

#: The bundled Aperio SVS (see ``sample/ATTRIBUTION.md``).
SAMPLE_SLIDE = Path(__file__).parent / "sample" / "CMU-1-Small-Region.svs"


def sample_slide() -> list[tuple]:
    """Layer data for the bundled CMU-1-Small-Region SVS (H&E skin, 20x, 0.499 µm/px)."""
    from .reader import read_slide

    return read_slide(SAMPLE_SLIDE)
