"""A slide's µm/px, stated once by the user and used by every panel and command.

Many slides (TCGA SVS exports, plain TIFFs, some NDPI/OME files) record no pixel size. The
user states it once (a panel's "slide µm/px" row, the slide layer's scale, or
``--slide-mpp`` on any command) and it is remembered here, for that file, across processes:
a JSON registry ``$MRPLIP_HOME/slide-mpp.json`` (see :func:`napari_mrplip.outputs.home`).

Rules (applied by :func:`resolve`, which ``open_slide`` calls):

- the file's own µm/px is never replaced by a remembered one;
- an explicit ``open_slide(path, mpp=...)`` (CLI ``--slide-mpp``) wins, and is remembered
  when the file records none;
- otherwise a remembered value is used if it was stated for this very file: same resolved
  path, size and modification time (a replaced file does not inherit it).

``slide.metadata["mpp_source"]`` then says where ``slide.mpp`` came from: ``"file"``,
``"argument"``, ``"stated"``, or ``None`` (unknown). The registry is untrusted input: its size
is bounded, every value is checked, and a corrupt file is ignored with a warning (and
rewritten on the next statement). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

from napari_mrplip.outputs import home, write_text

#: Range of µm/px accepted (0.01 = beyond any scanner; 100 = a 224 px tile spans 22 mm).
MIN_MPP, MAX_MPP = 0.01, 100.0
#: Registry file name under :func:`~napari_mrplip.outputs.home`.
FILE_NAME = "slide-mpp.json"
#: Most slides remembered (the oldest statements are dropped first).
MAX_ENTRIES = 5000
#: Largest registry file read (bytes); a bigger one is ignored as corrupt.
MAX_BYTES = 4 << 20
#: ``slide.metadata`` key naming where ``slide.mpp`` came from.
SOURCE_KEY = "mpp_source"
SOURCES = ("file", "argument", "stated")

#: How to state a µm/px, for error messages.
HOW_TO_STATE = (
    "state it once: the 'slide µm/px' row of any napari-mrplip panel, or "
    "'mrplip info SLIDE --slide-mpp 0.25' (0.25 = 40x, 0.5 = 20x)"
)

_announce = None  # a text stream: say on it when a remembered value is used (the CLI sets it)
_announced: set[str] = set()


def registry_path() -> Path:
    """The JSON file holding stated µm/px values."""
    return home() / FILE_NAME


def check_mpp(value: object, what: str = "slide µm/px") -> float:
    """``value`` as a float in [:data:`MIN_MPP`, :data:`MAX_MPP`]; ``ValueError`` otherwise."""
    try:
        mpp = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(mpp):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if not MIN_MPP <= mpp <= MAX_MPP:
        raise ValueError(
            f"{what} must be between {MIN_MPP:g} and {MAX_MPP:g} µm/px "
            f"(0.25 = 40x, 0.5 = 20x), got {value!r}"
        )
    return mpp


def _identity(path: str | Path) -> tuple[str, int, int] | None:
    """(resolved path, size, mtime_ns) of a file or folder; ``None`` if it cannot be read."""
    try:
        p = Path(path).resolve()
        st = p.stat()
    except OSError:
        return None
    return str(p), int(st.st_size), int(st.st_mtime_ns)


def _load() -> dict[str, dict]:
    """The registry's valid entries (path -> record); a corrupt file warns and reads empty."""
    path = registry_path()
    try:
        if not path.is_file():
            return {}
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES >> 20} MiB")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not isinstance(raw.get("slides"), dict):
            raise ValueError('expected {"version": 1, "slides": {...}}')
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        warnings.warn(
            f"{path}: stated slide µm/px could not be read ({e}); ignored, it is rewritten "
            "the next time a µm/px is stated",
            stacklevel=3,
        )
        return {}
    out = {}
    for key, rec in list(raw["slides"].items())[-MAX_ENTRIES:]:
        try:
            out[str(key)] = {
                "mpp": check_mpp(rec["mpp"]),
                "size": int(rec["size"]),
                "mtime_ns": int(rec["mtime_ns"]),
                "stated_at": float(rec.get("stated_at", 0.0)),
            }
        except (KeyError, TypeError, ValueError):
            continue  # one bad record never hides the others
    return out


def stated_mpp(path: str | Path) -> float | None:
    """The µm/px stated for this very file, or ``None`` (never stated, or the file changed)."""
    ident = _identity(path)
    if ident is None:
        return None
    rec = _load().get(ident[0])
    if rec is None or (rec["size"], rec["mtime_ns"]) != ident[1:]:
        return None
    return rec["mpp"]


@contextlib.contextmanager
def _locked(path: Path):
    """Serialise read-modify-write between processes (POSIX ``flock``; best effort elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: the write is still atomic, a concurrent update may be lost
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def state_mpp(path: str | Path, mpp: float) -> Path:
    """Remember ``mpp`` (level-0 µm/px) for the file at ``path``; returns the registry path.

    Writes only when the value changes (temp file + rename). Raises ``ValueError`` for a value
    out of range or a file that does not exist, ``OSError`` when the registry cannot be written.
    """
    mpp = check_mpp(mpp)
    ident = _identity(path)
    if ident is None:
        raise ValueError(f"{path}: no such file; cannot remember its µm/px")
    reg = registry_path()
    with _locked(reg):
        entries = _load()
        old = entries.get(ident[0])
        if old and old["mpp"] == mpp and (old["size"], old["mtime_ns"]) == ident[1:]:
            return reg
        entries.pop(ident[0], None)
        entries[ident[0]] = {
            "mpp": mpp, "size": ident[1], "mtime_ns": ident[2], "stated_at": time.time()
        }  # fmt: skip
        keep = sorted(entries.items(), key=lambda kv: kv[1]["stated_at"])[-MAX_ENTRIES:]
        text = json.dumps({"version": 1, "slides": dict(keep)}, indent=1)
        write_text(reg, text, overwrite=True)
    return reg


def forget_mpp(path: str | Path) -> bool:
    """Drop what was stated for ``path``; ``True`` when there was something to drop."""
    ident = _identity(path)
    key = ident[0] if ident else str(Path(path).absolute())
    reg = registry_path()
    with _locked(reg):
        entries = _load()
        if entries.pop(key, None) is None:
            return False
        write_text(reg, json.dumps({"version": 1, "slides": entries}, indent=1), overwrite=True)
    return True


def resolve(slide, mpp: float | None = None):
    """Set ``slide.mpp`` and ``slide.metadata["mpp_source"]`` by the rules above; returns it.

    Parameters
    ----------
    slide : Slide
        Just opened by a backend (``slide.mpp`` is the file's own value or ``None``).
    mpp : float, optional
        An explicit level-0 µm/px (``open_slide(mpp=...)``, CLI ``--slide-mpp``).
    """
    from .errors import SlideOpenError

    if mpp is not None:
        try:
            mpp = check_mpp(mpp, "mpp")
        except ValueError as e:
            raise SlideOpenError(f"{slide.path}: {e}") from None
        if slide.mpp is None:
            _remember(slide.path, mpp)
        slide.mpp, slide.metadata[SOURCE_KEY] = mpp, "argument"
    elif slide.mpp is not None:
        slide.metadata[SOURCE_KEY] = "file"
    else:
        value = stated_mpp(slide.path)
        slide.mpp, slide.metadata[SOURCE_KEY] = value, None if value is None else "stated"
        if value is not None:
            _say_stated(slide.path, value)
    return slide


def adopt(slide, mpp: float, remember: bool = True):
    """State ``mpp`` for an open slide whose file records none (a panel, a layer's scale).

    Sets ``slide.mpp`` and its source (``"stated"``) and remembers it. Refuses (``ValueError``)
    to change a slide whose file records its own µm/px. A registry that cannot be written
    warns; the value still holds for this slide.
    """
    mpp = check_mpp(mpp)
    if source_of(slide) == "file":
        raise ValueError(
            f"{slide.name}: the file records {slide.mpp:g} µm/px itself; it is not replaced"
        )
    if remember:
        _remember(slide.path, mpp)
    slide.mpp, slide.metadata[SOURCE_KEY] = mpp, "stated"
    return slide


def source_of(slide) -> str | None:
    """Where ``slide.mpp`` came from: ``"file"``, ``"argument"``, ``"stated"`` or ``None``."""
    src = slide.metadata.get(SOURCE_KEY)
    if src in SOURCES:
        return src
    return None if slide.mpp is None else "file"


def describe(slide) -> str:
    """One line for panels and ``mrplip info``: the µm/px and where it came from."""
    src = source_of(slide)
    if slide.mpp is None:
        return "unknown (the file records none; state it)"
    where = {
        "file": "from the file",
        "argument": "given on the command line",
        "stated": f"stated by you ({registry_path()})",
    }[src or "file"]
    return f"{slide.mpp:g} µm/px, {where}"


def parse_slide_mpp(text: str) -> float:
    """argparse ``type=`` for ``--slide-mpp``: a number in [:data:`MIN_MPP`, :data:`MAX_MPP`]."""
    import argparse

    try:
        return check_mpp(text, "--slide-mpp")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_slide_mpp(parser, fallback: bool = False) -> None:
    """Add ``--slide-mpp`` to ``parser``: the same words in every command that opens a slide
    (``napari_mrplip.cli_types`` re-exports it for the command modules).

    ``fallback``: the value applies only to slides whose file records no µm/px (commands over
    many slides of mixed scanners: pretrain, manifest); otherwise it overrides the file's.
    """
    which = (
        "for the slides whose file records none" if fallback else "(overrides the file's own)"
    )
    parser.add_argument(
        "--slide-mpp", type=parse_slide_mpp, default=None, metavar="UM_PER_PX",
        help=f"level-0 µm/px {which}; 0.25 = 40x, 0.5 = 20x. Remembered for a file that "
        "records none ($MRPLIP_HOME/slide-mpp.json), so later commands and the napari "
        "panels use it: state it once, e.g. 'mrplip info SLIDE --slide-mpp 0.25'.",
    )  # fmt: skip


def announce_to(stream=True) -> None:
    """Say (once per file) when a remembered µm/px is used: on ``stream``, or on whatever
    ``sys.stderr`` is at that moment when ``stream`` is ``True`` (what the CLI sets);
    ``None`` or ``False``: silent."""
    global _announce
    _announce = stream or None


def _say_stated(path, value: float) -> None:
    if _announce is None or str(path) in _announced:
        return
    _announced.add(str(path))
    stream = sys.stderr if _announce is True else _announce
    try:
        print(
            f"{Path(path).name}: using {value:g} µm/px stated earlier ({registry_path()}); "
            "pass --slide-mpp to change",
            file=stream,
        )
    except (OSError, ValueError):  # a closed or broken stream: a notice never stops opening
        pass


def _remember(path, mpp: float) -> None:
    """:func:`state_mpp`, but a registry that cannot be written only warns."""
    try:
        state_mpp(path, mpp)
    except (OSError, ValueError) as e:
        warnings.warn(f"{path}: µm/px {mpp:g} not remembered ({e})", stacklevel=3)
