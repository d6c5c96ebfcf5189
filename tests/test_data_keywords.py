"""Keyword extraction from captions."""

from __future__ import annotations

from napari_mrplip.data.keywords import extract_keywords, normalise


def test_vocabulary_phrases_ranked_and_deduplicated():
    caps = [
        "High power view (20x) of H&E section showing dense nuclei and pink stroma.",
        "H&E stained section at 20x showing dense nuclei with coarse chromatin.",
        "Immunohistochemistry at 20x showing brown DAB-positive nuclei.",
        "Tumour cells with foamy cytoplasm in a lymph node.",
    ]
    kw = extract_keywords(caps)
    assert kw[:2] == ["h&e", "dense nuclei"]  # two mentions each, first-seen order
    assert kw.count("dense nuclei") == 1
    for term in [
        "pink stroma",
        "brown dab-positive nuclei",
        "lymph node",
        "foamy cytoplasm",
        "tumor",
    ]:
        assert term in kw
    # The longest vocabulary match wins: "nuclei" alone is not repeated for "dense nuclei".
    assert "nuclei" not in kw
    assert extract_keywords(caps, max_keywords=3) == kw[:3]


def test_spelling_and_plural_folding():
    kw = extract_keywords(["Tumour with glandular lumens.", "Tumor next to a lumen."])
    assert kw.count("tumor") == 1 and "tumour" not in kw
    assert normalise("DAB positive  Nuclei!") == "dab-positive nuclei"


def test_noun_phrases_outside_the_vocabulary():
    kw = extract_keywords(["Sheets of atypical epithelial cells with vesicular nuclei."])
    assert "atypical epithelial cells" in kw and "vesicular nuclei" in kw
    assert extract_keywords([]) == [] and extract_keywords(["the of and"]) == []


def test_noun_phrases_stop_at_clause_punctuation():
    kw = extract_keywords(
        ["Stained tissue; tissue covers most of the field, showing dense nuclei, open lumens."]
    )
    assert "tissue tissue" not in kw and "nuclei open lumen" not in kw
    assert "dense nuclei" in kw and "open lumen" in kw
