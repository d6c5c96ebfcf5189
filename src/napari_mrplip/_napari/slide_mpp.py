"""One slide µm/px for every panel: :func:`slide_of` and the "slide µm/px" row.

Every panel gets its slide through :func:`slide_of(layer) <slide_of>`, which resolves the
µm/px of a slide whose file records none: stated earlier (``io.stated_mpp``, in any panel,
process or command), or adopted from the slide layer's scale when the user set it themselves
(console, script) while its units are pixels. :class:`SlideMppRow` is the row each panel
shows under its slide choice: the µm/px and where it came from, or a field and a "Set"
button when the slide has none.

Stating a µm/px (:func:`state_on_layer`) records it, sets the slide layer's ``scale`` to
``(mpp, mpp)`` and its units to micrometres. Layers this plugin drew over that slide
(heatmaps, review shapes, outlines: marked with :func:`over`) follow any change of the slide
layer's scale, so they stay aligned.
"""

from __future__ import annotations

import math

from magicgui.widgets import Container, FloatSpinBox, Label, PushButton

from napari_mrplip.io import stated_mpp as sm

#: Metadata key on layers this plugin drew over a slide layer: the slide's path.
OVER_KEY = "mrplip_over"
#: What a panel says when it needs a µm/px the slide lacks.
NEEDS_MPP = (
    "{name} records no µm/px: state it in the 'slide µm/px' row (0.25 for 40x, 0.5 for 20x)"
)
_WATCHED = "_mrplip_scale_watch"
_UM = "micrometer"


class NoSlideError(ValueError):
    """The chosen layer carries no slide (the panels show the message)."""


def over(slide_layer) -> dict:
    """Metadata marking a layer as drawn over ``slide_layer`` (it then follows its scale)."""
    if slide_layer is None:
        return {}
    return {OVER_KEY: _slide_key(slide_layer)}


def _slide_key(slide_layer) -> str:
    slide = slide_layer.metadata.get("slide")
    return str(slide_layer.metadata.get("path") or getattr(slide, "path", "") or id(slide_layer))


def _in_pixels(layer) -> bool:
    return all(str(u) in ("pixel", "px") for u in tuple(layer.units)[-2:])


def slide_of(layer, viewer=None):
    """The :class:`~napari_mrplip.io.Slide` behind a reader-made ``layer``, µm/px resolved.

    A slide whose file records no µm/px gets one stated for it earlier (any panel, process or
    command), else the slide layer's own scale when the user set it (square, not 1, units still
    pixels), which is then recorded like a stated value. The slide layer's scale and units are
    brought in line, and the layers drawn over it (in ``viewer``) follow it from now on.
    Raises :class:`NoSlideError` when ``layer`` is not a slide layer.
    """
    slide = None if layer is None else layer.metadata.get("slide")
    if slide is None:
        raise NoSlideError("open a slide first (File > Open, or the sample slide)")
    watch(layer, viewer)
    if slide.mpp is None:
        value = sm.stated_mpp(slide.path)
        if value is not None:
            sm.adopt(slide, value, remember=False)
        else:
            sy, sx = (float(v) for v in layer.scale[-2:])
            if _in_pixels(layer) and math.isclose(sy, sx, rel_tol=1e-6) and sy != 1.0:
                try:
                    sm.adopt(slide, sy)  # the user's own scale: µm/px, remembered
                except ValueError:
                    pass  # out of range: not a µm/px, leave the slide without one
    if slide.mpp is not None and _in_pixels(layer):
        _place(layer, slide.mpp)
    return slide


def state_on_layer(layer, mpp: float, viewer=None):
    """State ``mpp`` (level-0 µm/px) for the slide of ``layer``, here and for later.

    Records it (``io.stated_mpp``), sets the layer's scale to ``(mpp, mpp)`` and units to
    micrometres; layers drawn over it follow. Raises ``ValueError`` (out of range, or the file
    records its own value) and :class:`NoSlideError`.
    """
    slide = None if layer is None else layer.metadata.get("slide")
    if slide is None:
        raise NoSlideError("open a slide first (File > Open, or the sample slide)")
    watch(layer, viewer)
    sm.adopt(slide, mpp)
    before = _yx(layer.scale), _yx(layer.translate)
    _place(layer, slide.mpp)
    _keep_view(layer, *before, viewer)
    return slide


def _keep_view(layer, old_scale, old_translate, viewer=None) -> None:
    """Keep the same part of the slide on screen after its scale changed (camera follows)."""
    (osy, _), (oty, otx) = old_scale, old_translate
    (nsy, _), (nty, ntx) = _yx(layer.scale), _yx(layer.translate)
    k = nsy / osy
    if k == 1.0:
        return
    for v in _viewers_of(layer, viewer):
        cy, cx = _yx(v.camera.center)
        center = list(v.camera.center)
        center[-2:] = [nty + (cy - oty) * k, ntx + (cx - otx) * k]
        v.camera.center = tuple(center)
        v.camera.zoom = v.camera.zoom / k


def _place(layer, mpp: float) -> None:
    """Put the slide layer in µm: scale ``(mpp, mpp)`` (translate scaled alike), units µm."""
    sy, sx = (float(v) for v in layer.scale[-2:])
    scale = list(layer.scale)
    scale[-2:] = [mpp, mpp]
    translate = list(layer.translate)
    translate[-2:] = [translate[-2] * mpp / sy, translate[-1] * mpp / sx]
    layer.units = (*tuple(layer.units)[:-2], _UM, _UM)
    layer.translate = translate
    layer.scale = scale


def watch(slide_layer, viewer=None) -> None:
    """Make the layers drawn over ``slide_layer`` follow its scale, translate and units."""
    if slide_layer.metadata.get(_WATCHED):
        return
    state = {"scale": _yx(slide_layer.scale), "translate": _yx(slide_layer.translate)}

    def moved(event=None) -> None:
        _follow(slide_layer, state, viewer)

    slide_layer.events.scale.connect(moved)
    slide_layer.events.translate.connect(moved)
    slide_layer.events.units.connect(moved)
    slide_layer.metadata[_WATCHED] = True


def _yx(values) -> tuple[float, float]:
    return float(values[-2]), float(values[-1])


def _follow(slide_layer, state: dict, viewer=None) -> None:
    """Map every layer drawn over ``slide_layer`` from its old world placement to the new."""
    (osy, osx), (oty, otx) = state["scale"], state["translate"]
    (nsy, nsx), (nty, ntx) = _yx(slide_layer.scale), _yx(slide_layer.translate)
    state["scale"], state["translate"] = (nsy, nsx), (nty, ntx)
    viewer_layers = _viewer_layers(slide_layer, viewer)
    key = _slide_key(slide_layer)
    units = tuple(slide_layer.units)[-2:]
    for layer in viewer_layers:
        if layer is slide_layer or layer.metadata.get(OVER_KEY) != key:
            continue
        ky, kx = nsy / osy, nsx / osx
        (sy, sx), (ty, tx) = _yx(layer.scale), _yx(layer.translate)
        scale, translate = list(layer.scale), list(layer.translate)
        scale[-2:] = [sy * ky, sx * kx]
        translate[-2:] = [nty + (ty - oty) * ky, ntx + (tx - otx) * kx]
        if tuple(layer.units)[-2:] != units:
            layer.units = (*tuple(layer.units)[:-2], *units)
        layer.scale, layer.translate = scale, translate


def _viewers_of(slide_layer, viewer=None) -> list:
    """The viewer(s) holding ``slide_layer`` (napari keeps no back-reference)."""
    from napari.viewer import Viewer

    viewers = [viewer] if viewer is not None else list(getattr(Viewer, "_instances", ()))
    return [v for v in viewers if v is not None and slide_layer in v.layers]


def _viewer_layers(slide_layer, viewer=None) -> list:
    """The layers of the viewer(s) holding ``slide_layer``."""
    return [ly for v in _viewers_of(slide_layer, viewer) for ly in v.layers]


class SlideMppRow(Container):
    """The "slide µm/px" row: the value and its source, or a field and "Set" when unknown.

    Parameters
    ----------
    slide_combo : magicgui ComboBox
        The panel's slide choice; the row follows it.
    on_set : callable, optional
        Called with the slide after a value was stated (the panel may refresh itself).
    """

    def __init__(self, slide_combo, viewer=None, on_set=None, **kwargs):
        super().__init__(layout="horizontal", labels=False, label="slide µm/px", **kwargs)
        self.combo, self.viewer = slide_combo, viewer
        self.on_set = on_set
        self.note = Label(value="")
        self.value = FloatSpinBox(value=0.5, min=sm.MIN_MPP, max=sm.MAX_MPP, step=0.01)
        self.set_btn = PushButton(text="Set")
        self.extend([self.note, self.value, self.set_btn])
        self.margins = (0, 0, 0, 0)
        self.set_btn.changed.connect(lambda *_: self.apply())
        self.combo.changed.connect(lambda *_: self.refresh())
        self._layer = None
        self.editable = False
        self.refresh()

    def refresh(self) -> str:
        """Show the chosen slide's µm/px and its source; returns the note shown."""
        layer = self.combo.value
        if layer is not self._layer and layer is not None:
            self._layer = layer
            layer.events.scale.connect(lambda *_: self.refresh())
        try:
            slide = slide_of(layer, self.viewer)
        except NoSlideError:
            self.note.value, self.editable = "no slide", False
            self.value.visible = self.set_btn.visible = False
            return self.note.value
        unknown = slide.mpp is None
        editable = sm.source_of(slide) != "file"
        self.note.value = "unknown: state it" if unknown else _short(slide)
        self.note.tooltip = (
            "The file records no pixel size. Stated once here, it is used by every panel "
            f"and mrplip command (remembered in {sm.registry_path()})."
        )
        self.editable = editable  # the field and "Set" are shown (``visible`` needs a shown window)
        self.value.visible = self.set_btn.visible = editable
        if not unknown:
            self.value.value = slide.mpp
        return self.note.value

    def apply(self, mpp: float | None = None):
        """State ``mpp`` (default: the field) for the chosen slide; returns the slide or None."""
        value = float(self.value.value if mpp is None else mpp)
        try:
            slide = state_on_layer(self.combo.value, value, self.viewer)
        except ValueError as e:
            self.note.value = f"error: {e}"
            return None
        self.refresh()
        if self.on_set is not None:
            self.on_set(slide)
        return slide


def _short(slide) -> str:
    where = {"file": "from the file", "argument": "given to open_slide", "stated": "stated"}
    return f"{slide.mpp:g} µm/px, {where.get(sm.source_of(slide) or 'file')}"
