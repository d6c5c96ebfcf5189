"""What the user is looking at: the visible pyramid level and viewport of a slide layer.

The viewport comes from the camera (centre, zoom) and the canvas size, which is exact,
rather than from ``layer.corner_pixels`` (chunk-aligned, updated only on draw, and seen
stale while a level unlocks). :class:`ViewFollower` debounces camera and ``set_data``
events and reports a new :class:`ViewState` only when it changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

#: Canvas size (height, width) in screen px assumed before the viewer has drawn.
DEFAULT_CANVAS = (1080, 1920)


@dataclass(frozen=True)
class ViewState:
    """The visible part of a slide.

    Attributes
    ----------
    level : int
        Pyramid level whose resolution matches the screen best (the "visible level").
    region_level0 : tuple of int
        (x0, y0, x1, y1) in level-0 px, clipped to the slide.
    """

    level: int
    region_level0: tuple[int, int, int, int]

    @property
    def empty(self) -> bool:
        x0, y0, x1, y1 = self.region_level0
        return x1 <= x0 or y1 <= y0


def viewport_level0(
    center_world: tuple[float, float],
    zoom: float,
    canvas_hw: tuple[int, int],
    scale: tuple[float, float],
    translate: tuple[float, float],
    dims_level0: tuple[int, int],
) -> tuple[int, int, int, int]:
    """Viewport (x0, y0, x1, y1) in level-0 px, clipped to the slide.

    Parameters
    ----------
    center_world : (y, x)
        Camera centre in world units.
    zoom : float
        Screen px per world unit.
    canvas_hw : (height, width)
        Canvas size in screen px.
    scale, translate : (y, x)
        The slide layer's level-0 scale and translate (world units per level-0 px).
    dims_level0 : (width, height)
        Slide size in level-0 px.
    """
    half_h, half_w = canvas_hw[0] / (2 * zoom), canvas_hw[1] / (2 * zoom)
    cy, cx = center_world
    y0 = (cy - half_h - translate[0]) / scale[0]
    y1 = (cy + half_h - translate[0]) / scale[0]
    x0 = (cx - half_w - translate[1]) / scale[1]
    x1 = (cx + half_w - translate[1]) / scale[1]
    w, h = dims_level0
    return (
        max(0, math.floor(x0)),
        max(0, math.floor(y0)),
        min(w, math.ceil(x1)),
        min(h, math.ceil(y1)),
    )


def visible_level(slide, zoom: float, scale: float) -> int:
    """The coarsest level with at least one level pixel per screen pixel."""
    screen_px_per_level0 = zoom * scale
    if screen_px_per_level0 <= 0:
        return slide.n_levels - 1
    return slide.best_level_for_downsample(max(1.0, 1.0 / screen_px_per_level0))


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def canvas_hw(viewer) -> tuple[int, int]:
    """Canvas (height, width) in screen px; a 1080p guess before the canvas exists."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    if size is None or min(size) <= 1:
        return DEFAULT_CANVAS
    return int(size[0]), int(size[1])


def view_state(viewer, layer, slide) -> ViewState:
    """The current :class:`ViewState` of ``slide`` shown as ``layer`` in ``viewer``."""
    canvas = canvas_hw(viewer)
    cam = camera(viewer)
    scale = tuple(float(v) for v in layer.scale[-2:])
    translate = tuple(float(v) for v in layer.translate[-2:])
    center = tuple(float(v) for v in cam.center[-2:])
    zoom = float(cam.zoom)
    region = viewport_level0(center, zoom, canvas, scale, translate, slide.dimensions)
    return ViewState(visible_level(slide, zoom, scale[1]), region)


class ViewFollower:
    """Calls ``callback(ViewState)`` after the view settles, when it changed.

    Listens to the camera's ``center``/``zoom`` events and ``layer.events.set_data``;
    a single-shot Qt timer of ``delay_ms`` debounces bursts of events (a pan emits dozens).
    """

    def __init__(self, viewer, layer, slide, callback: Callable[[ViewState], None], delay_ms=300):
        from qtpy.QtCore import QTimer

        self.viewer, self.layer, self.slide, self.callback = viewer, layer, slide, callback
        self.last: ViewState | None = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.fire)
        cam = camera(viewer)
        self._sources = [cam.events.center, cam.events.zoom]
        if hasattr(layer.events, "set_data"):
            self._sources.append(layer.events.set_data)
        for emitter in self._sources:
            emitter.connect(self.schedule)

    def schedule(self, event=None) -> None:
        """(Re)start the debounce timer."""
        self._timer.start()

    @property
    def pending(self) -> bool:
        return self._timer.isActive()

    def fire(self) -> ViewState | None:
        """Read the view now; call back if it changed. Returns the state passed, if any."""
        self._timer.stop()
        state = view_state(self.viewer, self.layer, self.slide)
        if state == self.last or state.empty:
            return None
        self.last = state
        self.callback(state)
        return state

    def close(self) -> None:
        """Disconnect from the viewer and stop the timer."""
        self._timer.stop()
        for emitter in self._sources:
            emitter.disconnect(self.schedule)
