"""A model picker shared by the panels: catalogue entries plus "Browse..." for a local dir.

The choices are ``models.catalog.list_models()`` (the embedded ``mrplip-demo`` first, then
checkpoints registered by training runs) and any directory the user browsed to: an MR-PLIP
checkpoint, an open_clip / QuiltNet directory, a PLIP (transformers CLIPModel) directory or
a CONCH directory. The value is the spec string ``models.encoders.get_encoder`` takes.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit

from napari_mrplip.models import catalog

#: Live pickers, so a finished training run can refresh every panel's list.
_PICKERS: weakref.WeakSet = weakref.WeakSet()


def refresh_all() -> int:
    """Re-read the catalogue in every live picker; returns how many were refreshed."""
    refreshed = 0
    for picker in list(_PICKERS):
        try:
            picker.refresh()
        except RuntimeError:  # its Qt widget was deleted (panel closed) but Python still holds it
            _PICKERS.discard(picker)
            continue
        refreshed += 1
    return refreshed


def _guess_kind(path: Path) -> str:
    """Cheap guess of a directory's model family from the files it holds (display only)."""
    names = {p.name for p in path.iterdir()} if path.is_dir() else set()
    if "mrplip_config.json" in names:
        return "mrplip"
    if "open_clip_config.json" in names:
        return "conch" if "conch" in path.name.lower() else "open_clip"
    if "config.json" in names:
        return "plip"
    return "local"


#: Specs that are not plain paths (see ``models.encoders.get_encoder``).
SPEC_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:", "open_clip:", "timm:", "musk:")


class ModelPicker(Container):
    """Combo box of models with a directory browser.

    Attributes
    ----------
    combo : ComboBox
        ``(label, spec)`` choices.
    browse : FileEdit
        Directory chooser; picking a directory adds it to the choices and selects it.
    """

    def __init__(self, label: str = "model", **kwargs):
        self.combo = ComboBox(label=label, choices=self._choices)
        self.browse = FileEdit(label="browse...", mode="d", value="")
        super().__init__(widgets=[self.combo, self.browse], labels=True, **kwargs)
        self._extra: list[tuple[str, str]] = []
        self.browse.changed.connect(self._on_browse)
        self.margins = (0, 0, 0, 0)
        _PICKERS.add(self)

    def _choices(self, widget=None) -> list[tuple[str, str]]:
        entries = [(f"{e.name} ({e.kind})", e.spec) for e in catalog.list_models()]
        known = {spec for _, spec in entries}
        return entries + [c for c in getattr(self, "_extra", []) if c[1] not in known]

    def refresh(self) -> None:
        """Re-read the catalogue (a training run may have registered a checkpoint)."""
        current = self.combo.value
        self.combo.reset_choices()
        if current in self.specs:
            self.combo.value = current

    def add_path(self, path: str | Path) -> str:
        """Add a local model directory (or a spec such as ``hf-hub:org/name`` or
        ``open_clip:ARCH@FILE``) to the choices and select it; returns its spec."""
        if str(path).startswith(SPEC_PREFIXES):
            spec, label = str(path), str(path)[-40:]
        else:
            path = Path(path).expanduser().resolve()
            spec, label = str(path), f"{path.name} ({_guess_kind(path)}, local)"
        if spec not in [s for _, s in self._extra]:
            self._extra.append((label, spec))
        self.refresh()
        self.combo.value = spec
        return spec

    def _on_browse(self, value) -> None:
        if value and str(value) not in {"", "."} and Path(value).is_dir():
            self.add_path(value)

    @property
    def specs(self) -> list[str]:
        """Spec strings of all choices, in display order."""
        return list(self.combo.choices)

    @property
    def entries(self) -> list[tuple[str, str]]:
        """(label, spec) of all choices."""
        return self._choices()

    @property
    def value(self) -> str:
        """The selected spec (``mrplip-demo`` or a directory path)."""
        return self.combo.value

    @value.setter
    def value(self, spec: str) -> None:
        if spec not in self.specs:
            self.add_path(spec)
        else:
            self.combo.value = spec
