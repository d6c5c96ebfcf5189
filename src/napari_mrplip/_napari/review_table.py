"""The review panel's table: one row per annotation, most suspicious first, with shortcuts."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

COLUMNS = ("#", "label", "model says", "agree", "disagree", "tiles", "score status", "review")


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


class _KeyFilter(QObject):
    """Single letter keys pressed on the table (no modifier) run review actions."""

    def __init__(self, actions: dict[str, Callable], parent):
        super().__init__(parent)
        self.actions = {k.upper(): a for k, a in actions.items()}

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if event.type() != QEvent.Type.KeyPress:
            return False
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        action = self.actions.get(event.text().upper())
        if action is None or mods not in (
            Qt.KeyboardModifier.NoModifier,
            Qt.KeyboardModifier.ShiftModifier,
        ):
            return False
        action()
        return True


class ReviewTable:
    """A ``QTableWidget`` added to ``parent``'s layout.

    Parameters
    ----------
    parent : QWidget
        The panel's native widget (the table is appended to its layout).
    on_select : callable
        ``on_select(annotation)`` when the current row changes.
    """

    def __init__(self, parent, on_select: Callable):
        self.widget = QTableWidget(0, len(COLUMNS), parent)
        self.widget.setHorizontalHeaderLabels(list(COLUMNS))
        self.widget.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.widget.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.widget.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.widget.verticalHeader().setVisible(False)
        self.widget.setMinimumHeight(220)
        parent.layout().addWidget(self.widget)
        self.parent, self.rows, self._on_select, self._filling = parent, [], on_select, False
        self.widget.currentCellChanged.connect(self._changed)

    def bind_keys(self, actions: dict[str, Callable]) -> None:
        """Letter keys that act while the table has focus (Up/Down move between rows).

        A filter on the table rather than window shortcuts: letters typed in the panel's text
        fields, or in the viewer, are never taken.
        """
        self._keys = _KeyFilter(actions, self.widget)
        self.widget.installEventFilter(self._keys)

    def fill(self, annotations: list, scores: dict) -> None:
        """Show ``annotations`` in order; ``scores`` by annotation id."""
        self._filling = True
        try:
            self.rows = list(annotations)
            self.widget.setRowCount(len(self.rows))
            for r, ann in enumerate(self.rows):
                s = scores.get(ann.id)
                values = (
                    str(r + 1), ann.label or "(none)", s.model_label or "" if s else "",
                    _fmt(s.agreement) if s else "", _fmt(s.disagreement) if s else "",
                    str(s.n_tiles) if s else "", s.status if s else "not scored", ann.review.status,
                )  # fmt: skip
                for c, v in enumerate(values):
                    item = QTableWidgetItem(v)
                    if s and s.message:
                        item.setToolTip(s.message)
                    self.widget.setItem(r, c, item)
        finally:
            self._filling = False

    def select(self, row: int) -> None:
        if 0 <= row < len(self.rows):
            self.widget.setCurrentCell(row, 0)
            self.widget.setFocus()

    def current_row(self) -> int:
        return self.widget.currentRow()

    def current_annotation(self):
        r = self.widget.currentRow()
        return self.rows[r] if 0 <= r < len(self.rows) else None

    def _changed(self, row: int, *_) -> None:
        if not self._filling and 0 <= row < len(self.rows):
            self._on_select(self.rows[row])
