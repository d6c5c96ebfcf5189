"""Hugging Face text towers inside open_clip models (BiomedCLIP, QuiltNet-B-16-PMB), offline.

open_clip builds such a tower with ``AutoConfig.from_pretrained(hf_model_name)`` and the
tokenizer with ``AutoTokenizer.from_pretrained(hf_tokenizer_name)``, both of which download.
Here the text model's ``config.json`` and the tokenizer files are found locally instead:

* the text model config: the local Hugging Face cache entry of ``hf_model_name`` (matched
  case-insensitively), or a ``config.json`` with a ``model_type`` in the model folder;
* the tokenizer: tokenizer files in the model folder (BiomedCLIP's hub copy ships them),
  else the cache entry of ``hf_tokenizer_name``.

The tower is built from that config with random weights (``hf_model_pretrained=False``);
its weights then come from the open_clip checkpoint, as in open_clip. Remote code is never
enabled.
"""

from __future__ import annotations

import copy
from pathlib import Path

from napari_mrplip.models.encoders.hf_hub import find_snapshot
from napari_mrplip.models.encoders.weights import read_json_object, read_side_file
from napari_mrplip.models.errors import ModelLoadError

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")
#: Text-tower keys older open_clip wrote (BiomedCLIP's and QuiltNet-B-16-PMB's published
#: configs use them) -> the names current open_clip reads. Unmapped, current open_clip would
#: refuse the config or, worse, fall back to another pooler/projection.
LEGACY_TEXT_KEYS = {"proj": "hf_proj_type", "pooler_type": "hf_pooler_type"}


def _has_model_config(folder: Path) -> bool:
    raw = read_json_object(folder / "config.json")
    return raw is not None and raw.get("model_type") not in (None, "clip")


def text_model_dir(name: str, root: Path) -> Path:
    """Folder holding the ``config.json`` of the text model ``name`` (local only)."""
    snapshot = find_snapshot(name) if name.count("/") == 1 else None
    for folder in (snapshot, root):
        if folder is not None and _has_model_config(folder):
            return folder
    raise ModelLoadError(
        f"{root}: the text tower is the Hugging Face model {name}, whose config.json is not "
        "available locally (nothing is downloaded here). Fetch it once into the Hugging Face "
        f"cache with: huggingface-cli download {name} config.json  (found automatically "
        "through HF_HUB_CACHE / HF_HOME)"
    )


def tokenizer_dir(name: str, root: Path) -> Path:
    """Folder holding the tokenizer files of ``name``: the model folder first, then the cache."""
    snapshot = find_snapshot(name) if name.count("/") == 1 else None
    for folder in (root, snapshot):
        if folder is not None and any((folder / f).is_file() for f in TOKENIZER_FILES):
            return folder
    raise ModelLoadError(
        f"{root}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) for the Hugging Face "
        f"tokenizer {name}. Fetch them once with: huggingface-cli download {name} "
        "tokenizer_config.json vocab.txt tokenizer.json special_tokens_map.json"
    )


def localise_text_cfg(model_cfg: dict, root: Path) -> dict:
    """``model_cfg`` with an HF text tower pointed at its local config, legacy keys renamed
    (:data:`LEGACY_TEXT_KEYS`); unchanged without an HF text tower."""
    text_cfg = model_cfg.get("text_cfg", {})
    name = text_cfg.get("hf_model_name")
    if not name:
        return model_cfg
    cfg = copy.deepcopy(model_cfg)
    text = cfg["text_cfg"]
    for old, new in LEGACY_TEXT_KEYS.items():
        if old in text:
            value = text.pop(old)
            text.setdefault(new, value)
    text["hf_model_name"] = str(text_model_dir(str(name), root))
    text["hf_model_pretrained"] = False
    return cfg


def hf_tokenizer(text_cfg: dict, root: Path, context_length: int):
    """open_clip's ``HFTokenizer`` over local tokenizer files."""
    from open_clip.tokenizer import HFTokenizer

    name = str(text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"))
    folder = tokenizer_dir(name, root)
    for f in TOKENIZER_FILES:
        if (folder / f).is_file():
            read_side_file(folder / f)  # size check before a tokenizer library parses it
    try:
        return HFTokenizer(
            str(folder),
            context_length=context_length,
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            local_files_only=True,
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    except (OSError, ValueError, TypeError) as e:
        raise ModelLoadError(f"cannot read the tokenizer in {folder}: {e}") from e
