"""Warn in the heatmap panel when a prompt uses words the model never saw in training.

Thin: the check is ``models.vocabulary`` (torch-free, read from the checkpoint directory
without loading the model). Picking an entry of "known prompts" appends it to the prompts.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Label, TextEdit

from napari_mrplip.models.vocabulary import prompt_warnings, vocabulary_for_spec

#: First entry of the known-prompts box (selecting it adds nothing).
PICK = "(add a prompt the model knows)"


class VocabularyHint:
    """A warning label and a "known prompts" box bound to a prompts ``TextEdit``."""

    def __init__(self, prompts: TextEdit):
        self.prompts = prompts
        self.warning = Label(label="", value="")
        self.warning.native.setWordWrap(True)
        self.warning.native.setStyleSheet("color: #ffb000;")
        self._phrases: tuple[str, ...] = ()
        # a callable: napari's reset_choices() on the dock must not drop the phrases
        self.known = ComboBox(label="known prompts", choices=self._choices, value=PICK)
        self.known.changed.connect(self._add_known)
        self._spec = None

    def check(self, spec, prompts) -> list[str]:
        """Update the label and the known prompts for model ``spec``; returns the warnings."""
        vocab = vocabulary_for_spec(str(spec)) if spec else None
        if spec != self._spec:
            self._spec = spec
            self._phrases = vocab.phrases if vocab else ()
            with self.known.changed.blocked():
                self.known.reset_choices()
                self.known.value = PICK
        messages = prompt_warnings(vocab, prompts)
        self.warning.value = "\n".join(f"⚠ {m}" for m in messages)
        self.warning.visible = bool(messages)
        self.known.visible = vocab is not None and len(self.known.choices) > 1
        return messages

    def _choices(self, widget=None) -> list[str]:
        return [PICK, *self._phrases]

    def _add_known(self, value) -> None:
        if not value or value == PICK:
            return
        lines = [ln for ln in self.prompts.value.splitlines() if ln.strip()]
        if value not in lines:
            self.prompts.value = "\n".join([*lines, value])
        with self.known.changed.blocked():
            self.known.value = PICK
