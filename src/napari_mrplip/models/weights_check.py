"""Check a config against a safetensors file's header before any module is built.

A config that declares a 40 x 2048 vision tower next to 21 MB of weights would otherwise
allocate gigabytes before ``load_state_dict`` notices. The header (a few KB of JSON at the
start of the file) names every tensor's dtype and shape; the model's expected shapes come
from building it on the ``meta`` device, which allocates nothing.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from napari_mrplip.models.errors import ModelLoadError

#: Largest safetensors header accepted (the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100 * 1024**2


def read_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``name -> (dtype, shape)`` from a safetensors header, with every offset checked.

    Raises
    ------
    ModelLoadError
        The file is too short, the header is not JSON, or a tensor lies past the end.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        raise ModelLoadError(
            f"{path} is not a readable safetensors file ({e}); copy or export it again"
        ) from e
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
            if not 0 <= begin <= end <= size - 8 - n:
                raise ValueError(f"tensor {name!r} lies past the end of the file")
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(
                f"{path} is not a readable safetensors file: corrupt header ({e}); the file is "
                "truncated or damaged, copy or export it again"
            ) from e
        out[name] = (str(info.get("dtype")), shape)
    return out


def expected_shapes(build) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of the module ``build()`` returns, built on the meta device."""
    import torch

    with torch.device("meta"):
        module = build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def check_fits(
    path: str | Path, expected: dict[str, tuple[int, ...]], config: str, names: bool = True
) -> None:
    """Refuse weights whose tensors do not have the names and shapes ``expected``.

    ``names=False`` compares only the shapes of tensors present in both (files written by
    ``safetensors.torch.save_model`` drop the second name of a shared tensor).

    Raises
    ------
    ModelLoadError
        Naming up to five differences, the weights file and the config.
    """
    found = read_header(path)
    problems = [f"{k}: config {v}, file {found[k][1]}" for k, v in expected.items()
                if k in found and tuple(found[k][1]) != tuple(v)]  # fmt: skip
    missing = sorted(set(expected) - set(found)) if names else []
    extra = sorted(set(found) - set(expected)) if names else []
    if not names and not set(found) & set(expected):
        missing = ["(no tensor name in common)"]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s), e.g. {extra[:3]}")
    if problems:
        raise ModelLoadError(
            f"{path} does not match {config}: {'; '.join(problems[:5])}. The config and the "
            "weights come from different models; use the config the weights were saved with"
        )
