"""From what a viewer shows to a level-0 box the heatmap engine can tile.

Pure arithmetic, no napari: the widget passes the camera's numbers in.
"""

from __future__ import annotations


def camera_box_level0(
    center_world: tuple[float, float],
    zoom: float,
    canvas_px: tuple[int, int],
    world_per_px: float = 1.0,
    margin: float = 0.0,
) -> tuple[int, int, int, int]:
    """The level-0 box a 2-D camera shows.

    Parameters
    ----------
    center_world : (float, float)
        Camera centre as (y, x) in world units (µm when the slide layer is scaled by mpp).
    zoom : float
        Screen pixels per world unit.
    canvas_px : (int, int)
        Canvas (width, height) in screen pixels.
    world_per_px : float
        World units per level-0 pixel (the slide's mpp, or 1 when unscaled).
    margin : float
        Extra fraction of the view added on every side (prefetch around the view).

    Returns
    -------
    (x0, y0, x1, y1) : int
        Level-0 px, not clipped to the slide.
    """
    if zoom <= 0 or world_per_px <= 0:
        raise ValueError(f"zoom and world_per_px must be positive, got {zoom}, {world_per_px}")
    cy, cx = center_world
    half_w = canvas_px[0] / zoom / 2 * (1 + 2 * margin)
    half_h = canvas_px[1] / zoom / 2 * (1 + 2 * margin)
    x0, x1 = (cx - half_w) / world_per_px, (cx + half_w) / world_per_px
    y0, y1 = (cy - half_h) / world_per_px, (cy + half_h) / world_per_px
    return int(x0 // 1), int(y0 // 1), int(-(-x1 // 1)), int(-(-y1 // 1))


def clip_box(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Clip a level-0 box to the slide; ``None`` when it lies entirely outside."""
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)
