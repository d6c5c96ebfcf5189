"""The words a model was trained on, and prompts that use words it never saw.

A model trained on about forty stain phrases still paints a confident map for "tumour": the
softmax always sums to one. A checkpoint this project trains therefore records its training
vocabulary (``vocabulary.json`` next to ``model.safetensors``), built from its manifest's
captions and keywords; a prompt whose *content words* (not stop words or prompt-template
words) are all absent from it is flagged. External models (QuiltNet, PLIP, CONCH) carry no
file and are never flagged: their training text is not known here.

Torch-free: the CLI and the panel read it without loading a model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: File name inside a checkpoint directory.
VOCABULARY_FILE = "vocabulary.json"

#: Words that carry no content in a prompt (articles, template and framing words).
STOP_WORDS = frozenset(
    "a an the of and or with without in on at to from by for is are was were be been this "
    "that these those it its there here some any no not very more most less few many much "
    "showing shows show seen view image images picture photo photomicrograph micrograph "
    "histopathology histology histological slide section field area region regions region's "
    "stained staining stain example type kind like containing contains made mostly "
    "high low power x".split()
)
_WORD = re.compile(r"[a-z][a-z0-9&'\-]*")
_FOLD = {"tumour": "tumor", "haematoxylin": "hematoxylin", "oedema": "edema", "nucleus": "nuclei",
         "colour": "color", "haemorrhage": "hemorrhage", "foetal": "fetal"}  # fmt: skip


def normalise(word: str) -> str:
    """Lower-case, British->American spelling, plural folded ("cells" -> "cell")."""
    w = _FOLD.get(word.lower().strip("'-"), word.lower().strip("'-"))
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return _FOLD.get(w, w)


def _word_pairs(text: str) -> list[tuple[str, str]]:
    """(as typed, normalised) content words of a text, in order, ``a|b`` synonyms included."""
    pairs: dict[str, str] = {}
    for raw in _WORD.findall(text.lower().replace("|", " ")):
        for w in [raw, *raw.split("-")] if "-" in raw else [raw]:
            n = normalise(w)
            if n and n not in STOP_WORDS and len(n) > 1 and n not in pairs:
                pairs[n] = w.strip("'-")
    return [(w, n) for n, w in pairs.items()]


def content_words(text: str) -> list[str]:
    """Normalised content words of a text, in order (``a|b`` synonyms included)."""
    return [n for _, n in _word_pairs(text)]


@dataclass(frozen=True)
class TrainingVocabulary:
    """Words and phrases a model saw in training.

    Attributes
    ----------
    words : frozenset of str
        Normalised content words of every caption and keyword.
    phrases : tuple of str
        The training keywords, most frequent first: prompts the model knows.
    source : str
        Where it came from (e.g. the manifest path), for messages.
    """

    words: frozenset[str]
    phrases: tuple[str, ...] = ()
    source: str = ""

    @classmethod
    def from_texts(cls, captions: Iterable[str], keywords: Iterable[str] = (), source=""):
        """Vocabulary of captions and keywords (keywords become the known phrases)."""
        counts = Counter(k.strip().lower() for k in keywords if k and k.strip())
        words = {w for t in captions for w in content_words(t)}
        words |= {w for k in counts for w in content_words(k)}
        return cls(frozenset(words), tuple(k for k, _ in counts.most_common()), str(source))

    @classmethod
    def from_manifest_records(cls, records: Iterable[dict], source: str = ""):
        """From bag-manifest records (``tiles[*].caption`` and ``keywords``)."""
        captions, keywords = [], []
        for rec in records:
            captions += [t.get("caption", "") for t in rec.get("tiles", [])]
            keywords += list(rec.get("keywords", []))
        return cls.from_texts(captions, keywords, source)

    def extended(self, phrases: Iterable[str]) -> TrainingVocabulary:
        """This vocabulary plus ``phrases`` (e.g. a fine-tuned head's class names)."""
        phrases = [p for p in phrases if p]
        words = self.words | {w for p in phrases for w in content_words(p)}
        return TrainingVocabulary(frozenset(words), (*phrases, *self.phrases), self.source)

    def unseen(self, prompt: str) -> list[str]:
        """Content words of ``prompt`` (as typed) the model never saw in training."""
        return [w for w, n in _word_pairs(prompt) if n not in self.words]

    def save(self, directory: str | Path) -> Path:
        """Write ``DIR/vocabulary.json``; returns its path."""
        path = Path(directory) / VOCABULARY_FILE
        data = {"words": sorted(self.words), "phrases": list(self.phrases), "source": self.source}
        path.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainingVocabulary | None:
        """``DIR/vocabulary.json``, or None when the model records none (external models)."""
        path = Path(directory) / VOCABULARY_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(frozenset(map(str, data["words"])), tuple(data.get("phrases", [])),
                       str(data.get("source", "")))  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path}: not a valid training vocabulary ({e}); delete it to skip the "
                "unknown-word check"
            ) from e


def prompt_warnings(vocabulary: TrainingVocabulary | None, prompts: Iterable[str]) -> list[str]:
    """One message per prompt whose content words the model never saw ([] without vocabulary).

    A prompt is flagged when *any* of its content words is unseen: a half-known phrase
    ("tumour nuclei") scores mostly on the known half, which is not what was asked.
    """
    if vocabulary is None:
        return []
    out = []
    for p in prompts:
        unseen = vocabulary.unseen(p)
        if unseen:
            out.append(
                f"prompt {p!r}: the model never saw {', '.join(map(repr, unseen))} in training, "
                "so its map for this prompt is not meaningful (it only learnt "
                f"{len(vocabulary.words)} words; known prompts e.g. "
                f"{', '.join(vocabulary.phrases[:4])})"
            )
    return out


def vocabulary_for_spec(spec: str) -> TrainingVocabulary | None:
    """The training vocabulary of a model spec without loading the model (torch-free).

    ``"mrplip-demo"`` -> the embedded model's; an MR-PLIP checkpoint directory -> its
    ``vocabulary.json``; a fine-tuned directory -> its base model's plus its class names;
    anything else (external models, hub names) -> None.
    """
    from napari_mrplip.models.catalog import DEMO_MODEL

    root = Path(__file__).with_name("weights") / DEMO_MODEL if spec == DEMO_MODEL else None
    root = root or Path(str(spec)).expanduser()
    if not root.is_dir():
        return None
    tuned = root / "finetune_config.json"
    if tuned.is_file() and not (root / VOCABULARY_FILE).is_file():
        try:
            meta = json.loads(tuned.read_text())
            base = vocabulary_for_spec(str(meta["base_model"]))
            names = [str(n) for n in meta.get("class_names", [])]
        except (ValueError, KeyError, TypeError):
            return None
        return None if base is None else base.extended(names)
    return TrainingVocabulary.load(root)
