"""Feature store: every bag tile's features from a frozen encoder, on disk as zarr v3.

Layout (one zarr v3 group; ``FeatureStore`` is its only reader and writer)::

    STORE.zarr/zarr.json        root attributes: format, version, encoder (model_id),
                                feature_dim, input_size (px fed to the encoder), tile_mpps
    STORE.zarr/<slide_key>/     one group per slide and bag list (written by one worker)
        zarr.json               attributes: slide, slide_mpp, bags, tiles_per_bag, fingerprint,
                                bags_per_shard, complete
        features/               float32 (n_bags, N, F); one chunk per bag, shards of
                                ``bags_per_shard`` bags (one file each, written once)
    STORE.zarr.locks/           fcntl lock files beside the store (creation, one per slide)

``slide_key`` hashes the slide path, its µm/px and every tile's box and µm/px, so a store
answers only for exactly the bags it was built from. A store is refused, naming the
mismatch, when opened for another encoder, feature size, input size or set of µm/px.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .slide_cache import slide_lock

FORMAT = "mrplip-feature-store"
VERSION = 1
#: Bags per shard file: few files per slide, and a killed worker loses at most one shard.
BAGS_PER_SHARD = 8


class FeatureStoreError(ValueError):
    """A store is missing, malformed, or made for another encoder / µm/px / bag list."""


def tile_mpps(records: Sequence[dict]) -> list[float]:
    """Sorted distinct tile µm/px of manifest records (rounded to 1e-6)."""
    return sorted({round(float(t["mpp"]), 6) for r in records for t in r["tiles"]})


def slide_key(records: Sequence[dict]) -> str:
    """Key of one slide's bag list (its manifest records, in manifest order)."""
    ident = [
        [r["slide"], round(float(r["slide_mpp"]), 9)]
        + [[list(map(int, t["box"])), round(float(t["mpp"]), 9)] for t in r["tiles"]]
        for r in records
    ]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]


def _locks(path: Path) -> Path:
    return path.with_name(path.name + ".locks")


def group_by_slide(records: Sequence[dict]) -> dict[str, list[int]]:
    """``{slide path: [record indices]}`` in first-appearance order."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        out.setdefault(r["slide"], []).append(i)
    return out


class FeatureStore:
    """A feature store on disk (see module docstring).

    Use :meth:`create` to write (creates or re-opens, checking the identity) and
    :meth:`open` to read.
    """

    def __init__(self, path: str | Path, group, attrs: dict):
        self.path = Path(path)
        self._root = group
        self.encoder = str(attrs["encoder"])
        self.feature_dim = int(attrs["feature_dim"])
        self.input_size = int(attrs["input_size"])
        self.tile_mpps = [float(m) for m in attrs["tile_mpps"]]

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(
        cls, path, encoder: str, feature_dim: int, input_size: int, mpps: Sequence[float]
    ) -> FeatureStore:
        """Create the store, or open an existing one after checking it matches.

        Raises
        ------
        FeatureStoreError
            The existing store was made by another encoder, feature size, input size or
            at other µm/px.
        """
        import zarr

        path = Path(path)
        want = {"format": FORMAT, "version": VERSION, "encoder": str(encoder),
                "feature_dim": int(feature_dim), "input_size": int(input_size),
                "tile_mpps": sorted(round(float(m), 6) for m in mpps)}  # fmt: skip
        with slide_lock(_locks(path) / "store.lock"):
            if (path / "zarr.json").is_file():
                store = cls.open(path)
                store.check(encoder=encoder, feature_dim=feature_dim, input_size=input_size,
                            mpps=want["tile_mpps"])  # fmt: skip
                return store
            group = zarr.open_group(str(path), mode="a", zarr_format=3)
            group.attrs.update(want)
            return cls(path, group, want)

    @classmethod
    def open(cls, path) -> FeatureStore:
        """Open a store for reading (clear error when it is not one)."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise FeatureStoreError(
                f"{path}: not a feature store (no zarr.json); build one with "
                "'mrplip embed --store STORE --manifest MANIFEST --model ENCODER'"
            )
        group = zarr.open_group(str(path), mode="r+", zarr_format=3)
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT:
            raise FeatureStoreError(f"{path}: a zarr group but not an MR-PLIP feature store")
        if int(attrs.get("version", -1)) != VERSION:
            raise FeatureStoreError(
                f"{path}: feature store version {attrs.get('version')}, this version reads "
                f"{VERSION}; rebuild it with 'mrplip embed --store'"
            )
        return cls(path, group, attrs)

    def check(self, encoder=None, feature_dim=None, input_size=None, mpps=None) -> None:
        """Raise :class:`FeatureStoreError` naming the first property that differs."""
        tips = " Use the store built for this setting, or build one with 'mrplip embed --store'."
        if encoder is not None and str(encoder) != self.encoder:
            raise FeatureStoreError(
                f"{self.path}: made by encoder {self.encoder!r}, not {str(encoder)!r}.{tips}"
            )
        if feature_dim is not None and int(feature_dim) != self.feature_dim:
            raise FeatureStoreError(
                f"{self.path}: holds {self.feature_dim}-d features, the model expects "
                f"{int(feature_dim)} (vision.feature_dim).{tips}"
            )
        if input_size is not None and int(input_size) != self.input_size:
            raise FeatureStoreError(
                f"{self.path}: tiles were fed at {self.input_size} px, not {int(input_size)}."
                + tips
            )
        if mpps is not None:
            want = sorted(round(float(m), 6) for m in mpps)
            if not set(want) <= set(self.tile_mpps):
                raise FeatureStoreError(
                    f"{self.path}: made at {self.tile_mpps} µm/px, the manifest's tiles are at "
                    f"{want} µm/px.{tips}"
                )

    # ------------------------------------------------------------------ slides
    def _group(self, key: str):
        import zarr

        try:
            return zarr.open_group(str(self.path / key), mode="r+", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return None

    def slide_lock(self, key: str):
        """The exclusive lock a writer holds while writing one slide."""
        return slide_lock(_locks(self.path) / f"{key}.lock")

    def slide_array(self, records: Sequence[dict], bags_per_shard: int = BAGS_PER_SHARD):
        """The features array of one slide's bags, created when absent (hold its lock)."""
        key = slide_key(records)
        group = self._group(key)
        if group is not None:
            return group["features"]
        n_bags, n_tiles = len(records), len(records[0]["tiles"])
        shard = max(1, min(int(bags_per_shard), n_bags))
        group = self._root.create_group(key)
        group.attrs.update({
            "slide": records[0]["slide"], "slide_mpp": float(records[0]["slide_mpp"]),
            "bags": n_bags, "tiles_per_bag": n_tiles, "bags_per_shard": shard,
            "complete": False,
        })  # fmt: skip
        return group.create_array(
            "features", shape=(n_bags, n_tiles, self.feature_dim), dtype="float32",
            chunks=(1, n_tiles, self.feature_dim), shards=(shard, n_tiles, self.feature_dim),
            fill_value=float("nan"),
            chunk_key_encoding={"name": "default", "separator": "/"},
        )  # fmt: skip

    def shards_done(self, key: str, n_shards: int) -> list[bool]:
        """Which shard files of a slide exist (each is written whole, atomically)."""
        base = self.path / key / "features" / "c"
        return [(base / str(s) / "0" / "0").is_file() for s in range(n_shards)]

    def mark_complete(self, key: str) -> None:
        self._group(key).attrs["complete"] = True

    def is_complete(self, records: Sequence[dict]) -> bool:
        group = self._group(slide_key(records))
        return group is not None and bool(group.attrs.get("complete"))

    def require(self, records: Sequence[dict]) -> None:
        """Raise :class:`FeatureStoreError` unless these exact bags are complete in the store."""
        group = self._group(slide_key(records))
        if group is None or not group.attrs.get("complete"):
            raise FeatureStoreError(self._missing_message(records, group is not None))

    def slide_features(self, records: Sequence[dict]) -> np.ndarray:
        """``(n_bags, N, F)`` float32 features of one slide's bags.

        Raises
        ------
        FeatureStoreError
            The store has no complete entry for exactly these bags (names what it has for
            the slide instead: other µm/px or another bag list).
        """
        self.require(records)
        return np.asarray(self._group(slide_key(records))["features"][:])

    def _missing_message(self, records: Sequence[dict], partial: bool) -> str:
        slide = records[0]["slide"]
        if partial:
            return (f"{self.path}: {slide} is only partly embedded; rerun "
                    "'mrplip embed --store' to finish it")  # fmt: skip
        for _, group in self._root.groups():
            attrs = dict(group.attrs)
            if attrs.get("slide") == slide:
                return (
                    f"{self.path}: holds {slide} with other bags (slide µm/px "
                    f"{attrs.get('slide_mpp')}, {attrs.get('bags')} bags) than the manifest "
                    f"({records[0]['slide_mpp']} µm/px, {len(records)} bags): the store was "
                    "built from another manifest or µm/px; rebuild it with 'mrplip embed --store'"
                )
        return (f"{self.path}: has no features for {slide}; run 'mrplip embed --store' "
                "over this manifest first")  # fmt: skip
