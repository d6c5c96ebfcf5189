"""Keyword (term) extraction from captions: the bag of words CVTA aligns patches with.

Two sources, merged and ranked by how many captions mention them:

1. a pathology phrase vocabulary (multi-word terms first, so "brown DAB-positive nuclei"
   wins over "nuclei"), matched on normalised text;
2. noun-phrase heuristics for words outside the vocabulary: runs of content words between
   stop words and punctuation, ending on a known head noun (nuclei, stroma, cells ...).

Terms are lower-case, deduplicated (plural/singular and British/American spelling folded),
and a term contained in a longer kept term of the same caption is not counted twice.
"""

from __future__ import annotations

import re
from collections import Counter

#: Multi-word and single-word pathology terms, most specific first.
VOCABULARY: tuple[str, ...] = (
    "brown dab-positive nuclei",
    "dab-positive nuclei",
    "dab staining of membranes and cytoplasm",
    "dense hyperchromatic nuclei",
    "dense nuclei",
    "crowded nuclei",
    "hyperchromatic nuclei",
    "coarse chromatin",
    "granular chromatin",
    "prominent chromatin",
    "prominent nucleoli",
    "sparse scattered nuclei",
    "scattered nuclei",
    "low cellularity",
    "pink stroma",
    "eosinophilic fibrous stroma",
    "collagenous stroma",
    "fibrous stroma",
    "stroma",
    "adipose tissue",
    "fat vacuoles",
    "fat cells",
    "glandular lumens",
    "lumen",
    "background",
    "glass slide",
    "tissue border",
    "haematoxylin counterstain",
    "immunohistochemistry",
    "h&e",
    "tumour",
    "tumor",
    "lymphocytes",
    "lymph node",
    "necrosis",
    "mitoses",
    "foamy cytoplasm",
    "epithelium",
    "keratin",
    "muscle",
    "blood vessels",
    "inflammation",
    "mucin",
)

#: Head nouns a heuristic noun phrase must end with.
HEAD_NOUNS = frozenset(
    "nuclei nucleus cells cell stroma tissue cytoplasm chromatin lumens lumen vacuoles glands "
    "gland epithelium tumour tumor carcinoma lymphocytes necrosis fibrosis mucin vessels "
    "nucleoli mitoses keratin".split()
)
STOP_WORDS = frozenset(
    "a an the of and or with without in on at to from by for is are was were be this that "
    "these those it its there shows showing seen view image histopathology field section "
    "stained x power high low covers fills most small part no some few".split()
)

_FOLD = {"tumour": "tumor", "haematoxylin": "hematoxylin", "lumens": "lumen"}
_TOKEN = re.compile(r"[a-z&][a-z&\-]*|[,;.:()]")


def normalise(text: str) -> str:
    """Lower-case, unify spelling and spacing ("DAB positive" -> "dab-positive").

    Clause punctuation (``, ; . : ( )``) is kept as separate tokens: noun phrases never
    span it. Other characters are dropped.
    """
    text = text.lower().replace("dab positive", "dab-positive")
    return " ".join(_TOKEN.findall(text)).replace(" .", ".").replace(" ,", ",")


def _canonical(term: str) -> str:
    words = [_FOLD.get(w, w) for w in term.split()]
    return " ".join(words)


def _vocabulary_hits(text: str) -> list[str]:
    hits, taken = [], []
    for term in VOCABULARY:
        for m in re.finditer(rf"(?<![a-z\-]){re.escape(term)}(?![a-z\-])", text):
            span = m.span()
            if any(a <= span[0] and span[1] <= b for a, b in taken):
                continue
            taken.append(span)
            hits.append((span[0], term))
    return [term for _, term in sorted(hits)]  # in reading order


def _noun_phrases(text: str, max_words: int = 3) -> list[str]:
    out = []
    for chunk in re.split(r"[,;.:()]", text):
        run: list[str] = []
        for word in chunk.split() + [""]:
            if word and word not in STOP_WORDS:
                run.append(word)
                continue
            while run and run[-1] not in HEAD_NOUNS:
                run.pop()
            if len(run) >= 2:
                out.append(" ".join(run[-max_words:]))
            run = []
    return out


def extract_keywords(captions: list[str], max_keywords: int | None = None) -> list[str]:
    """Ranked, deduplicated keywords of a set of captions (e.g. all tiles of one bag).

    Parameters
    ----------
    captions : list of str
    max_keywords : int, optional
        Keep the first N (most frequent; ties in order of first appearance).

    Returns
    -------
    list of str
        Lower-case terms such as ``"dense nuclei"``, ``"pink stroma"``, ``"background"``.
    """
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for caption in captions:
        text = normalise(caption)
        terms = _vocabulary_hits(text)
        terms += [p for p in _noun_phrases(text) if not any(p in t or t in p for t in terms)]
        for term in dict.fromkeys(_canonical(t) for t in terms):
            counts[term] += 1
            first.setdefault(term, len(first))
    ranked = sorted(counts, key=lambda t: (-counts[t], first[t]))
    return ranked if max_keywords is None else ranked[:max_keywords]
