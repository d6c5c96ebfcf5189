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


def _loader_errors() -> tuple[type[BaseException], ...]:
    import pickle
    import zipfile

    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError, EOFError,
            AttributeError, pickle.UnpicklingError, zipfile.BadZipFile, SafetensorError)  # fmt: skip


_LOADER_ERRORS = _loader_errors()


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
            try:
                return backend.load(spec, device=device, precision=precision)
            except _LOADER_ERRORS as e:  # a damaged file a third-party loader chokes on
                if isinstance(e, ModelLoadError):
                    raise
                raise ModelLoadError(
                    f"cannot load the {name} model in {spec}: {type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}. "
                    "A file in that folder is damaged, unsafe (a pickle with code) or of "
                    "another version; download or export it again"
                ) from e
    raise ModelLoadError(
        f"cannot load a model from {spec!r}: expected 'mrplip-demo', an MR-PLIP checkpoint "
        "directory (mrplip_config.json + model.safetensors), an open_clip directory "
        "('local-dir:PATH' with open_clip_config.json), 'hf-hub:org/name' in the local "
        "Hugging Face cache, a PLIP (transformers CLIPModel) directory or a CONCH directory"
    )
