"""``hf-hub:org/name`` resolved in the existing local Hugging Face cache only (never downloads).

Repository names match case-insensitively, as on the hub.

The cache root is ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``,
else ``~/.cache/huggingface/hub``; a repository lives in ``models--org--name/snapshots/<rev>/``
with ``refs/main`` naming the revision. The snapshot directory is then loaded by whichever
backend recognises it (open_clip/QuiltNet, PLIP, CONCH, MR-PLIP).
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_mrplip.models.errors import ModelLoadError

PREFIXES = ("hf-hub:", "hf_hub:")


def detect(spec: str) -> bool:
    return spec.startswith(PREFIXES)


def cache_root() -> Path:
    """The Hugging Face hub cache directory from the environment."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_repo(repo: str) -> Path:
    """``models--org--name`` for ``repo`` in the cache, matched case-insensitively.

    The hub treats repository names case-insensitively (``MahmoodLab/conch`` and
    ``MahmoodLab/CONCH`` are one repository) but the cache folder keeps the spelling of
    the first download. An exact match wins; the returned path may not exist.
    """
    root = cache_root()
    name = "models--" + repo.replace("/", "--")
    if (root / name).is_dir() or not root.is_dir():
        return root / name
    matches = sorted(p for p in root.iterdir() if p.name.lower() == name.lower() and p.is_dir())
    return matches[0] if matches else root / name


def find_snapshot(repo: str) -> Path | None:
    """The cached snapshot of ``repo`` (``org/name``), or None when it is not cached."""
    try:
        return resolve("hf-hub:" + repo)
    except ModelLoadError:
        return None


def resolve(spec: str) -> Path:
    """The cached snapshot directory of ``hf-hub:org/name[@revision]``."""
    repo = spec.split(":", 1)[1].strip("/")
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1:
        raise ModelLoadError(f"{spec!r}: expected 'hf-hub:org/name'")
    base = cached_repo(repo)
    snapshots = base / "snapshots"
    if not snapshots.is_dir():
        raise ModelLoadError(
            f"{repo} is not in the local Hugging Face cache ({base} is missing). Nothing is "
            "downloaded here: fetch it once elsewhere (huggingface-cli download "
            f"{repo}), point HF_HUB_CACHE at that cache, or pass the model directory."
        )
    ref = base / "refs" / (revision or "main")
    rev = ref.read_text().strip() if ref.is_file() else revision
    if rev and (snapshots / rev).is_dir():
        return snapshots / rev
    candidates = sorted(
        (p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    if not candidates:
        raise ModelLoadError(f"{snapshots} holds no snapshot of {repo}")
    return candidates[-1]


def load(spec: str, device: str | None = None, precision: str = "auto"):
    """Resolve ``spec`` in the cache and load the snapshot with the matching backend."""
    from napari_mrplip.models.encoders import get_encoder

    snapshot = resolve(spec)
    try:
        return get_encoder(str(snapshot), device=device, precision=precision)
    except ModelLoadError as e:
        raise ModelLoadError(f"{spec} (cached at {snapshot}): {e}") from e
