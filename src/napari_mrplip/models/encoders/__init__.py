"""Encoder backends: MR-PLIP and published pathology CLIP models behind one protocol.

``get_encoder(spec)`` asks each registered backend, in order, whether it recognises
``spec`` and loads the first that does. One module per backend, each with
``detect(spec) -> bool`` and ``load(spec, device, precision) -> EncoderBackend``.
"""

from __future__ import annotations

import importlib

from napari_mrplip.models.errors import ModelLoadError

#: Backend modules in detection order (most specific first). open_clip directories come
#: before transformers CLIP folders: a snapshot holding both formats is open_clip's.
BACKENDS = (
    "finetuned",
    "mrplip",
    "open_clip_arch",
    "conch",
    "keep",
    "open_clip_dir",
    "plip",
    "timm_vision",
    "musk",
    "hf_hub",
)


def _backend(name: str):
    return importlib.import_module(f"napari_mrplip.models.encoders.{name}")


def get_encoder(spec: str, device: str | None = None, precision: str = "auto"):
    """Load the encoder named by ``spec``.

    Parameters
    ----------
    spec : str
        ``"mrplip-demo"``; an MR-PLIP (or fine-tuned) checkpoint directory; an open_clip
        directory (``local-dir:PATH`` or a plain path holding ``open_clip_config.json``);
        ``hf-hub:org/name`` present in the local Hugging Face cache; a PLIP
        (transformers ``CLIPModel``) directory; a CONCH directory.
    device : str, optional
        Torch device; default ``"cuda"`` when available, else ``"cpu"``.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision on GPU (``"auto"``: bf16 where supported); CPU runs fp32.

    Raises
    ------
    ModelLoadError
        Nothing recognises ``spec``, or the recognised backend fails to load it.
    """
    spec = str(spec)
    if spec.startswith("local-dir:") and not _backend("open_clip_dir").is_open_clip_dir(spec):
        spec = spec[len("local-dir:") :]  # a local directory of another format
    for name in BACKENDS:
        backend = _backend(name)
        if backend.detect(spec):
            return backend.load(spec, device=device, precision=precision)
    raise ModelLoadError(
        f"cannot load a model from {spec!r}: expected 'mrplip-demo', an MR-PLIP checkpoint "
        "directory (mrplip_config.json + model.safetensors), an open_clip directory "
        "('local-dir:PATH' with open_clip_config.json), 'hf-hub:org/name' in the local "
        "Hugging Face cache, a PLIP (transformers CLIPModel) directory or a CONCH directory"
    )
