"""The output policy: one place that decides whether, and how, a file or folder is written.

Every writer (heatmap rasters and GeoJSON, reviewed GeoJSON and its sidecar, checkpoints,
model folders, manifests) goes through this module, so the rules hold everywhere:

1. never write over an input (a slide, the annotations being read, a model folder);
2. never write over an existing file or folder unless the caller passes ``overwrite=True``
   (the CLI's ``--overwrite``; the panels ask first);
3. write to a temporary name in the same folder and rename it into place, so a failed
   write (an error, Ctrl-C, a full disk) leaves nothing half-made;
4. keep the user's umask (``tempfile`` would otherwise leave files 0600);
5. say in one line what was written where (:func:`announce`).

Standard library only: every package may import it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class OutputError(ValueError):
    """An output was refused (it is an input, or exists without ``overwrite``)."""


class DiskFullError(OSError):
    """The disk filled up while writing; nothing partial was left behind."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it (a folder input)."""
    try:
        path.resolve().relative_to(folder.resolve())
        return folder.is_dir()
    except (OSError, ValueError):
        return False


def check_output(
    path: str | Path, inputs: Iterable[str | Path] = (), overwrite: bool = False
) -> Path:
    """Refuse an output that is an input or (without ``overwrite``) already exists.

    Parameters
    ----------
    path : str or Path
        The file or folder about to be written.
    inputs : iterable of path
        Files or folders the command reads; the output may be none of them, nor lie
        inside an input folder, nor be a folder holding an input.
    overwrite : bool
        Allow replacing an existing output that is not an input.

    Returns
    -------
    Path

    Raises
    ------
    OutputError
    """
    path = Path(path)
    for src in inputs:
        src = Path(src)
        if _same(path, src) or _inside(path, src) or (path.is_dir() and _inside(src, path)):
            raise OutputError(
                f"{path}: refusing to write over the input {src}; choose another output name"
            )
    if (path.exists() or path.is_symlink()) and not overwrite:
        kind = "folder" if path.is_dir() else "file"
        raise OutputError(
            f"{path}: the {kind} exists; pass --overwrite to replace it or choose another name"
        )
    return path


def _fix_mode(path: Path, directory: bool) -> None:
    """Give a temporary file/folder the mode an ordinary ``open``/``mkdir`` would have."""
    mask = _umask()
    if directory:
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                os.chmod(os.path.join(root, f), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _disk_full(path: Path, e: OSError) -> DiskFullError:
    return DiskFullError(
        errno.ENOSPC,
        f"{path}: the disk is full ({e.strerror or e}); nothing was written. Free space or "
        "write elsewhere",
    )


def _place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path``; an existing folder is swapped out, then deleted."""
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_output(
    path: str | Path,
    *,
    inputs: Iterable[str | Path] = (),
    overwrite: bool = False,
    directory: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The policy (:func:`check_output`) is applied first. On any exception the temporary
    file or folder is removed; a full disk is re-raised as :class:`DiskFullError`.

    Parameters
    ----------
    path : str or Path
        The final output.
    inputs, overwrite
        See :func:`check_output`.
    directory : bool
        Yield an (empty, existing) temporary folder instead of a file name.
    """
    path = check_output(path, inputs, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _fix_mode(tmp, directory)
        _place(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(path, e) from e
        raise
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | Path, data: bytes, **policy) -> Path:
    """Write ``data`` to ``path`` atomically under the policy (see :func:`atomic_output`)."""
    with atomic_output(path, **policy) as tmp:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | Path, text: str, **policy) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically under the policy."""
    return write_bytes(path, text.encode("utf-8"), **policy)


def home() -> Path:
    """The user's data folder: ``$MRPLIP_HOME``, else ``$XDG_DATA_HOME/napari-mrplip``
    (default ``~/.local/share/napari-mrplip``). Holds the model catalogue, review sidecars
    and the stated slide µm/px (``io.stated_mpp``); tests point ``MRPLIP_HOME`` elsewhere."""
    env = os.environ.get("MRPLIP_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "napari-mrplip"


def announce(path: str | Path, what: str, stream=None) -> None:
    """One line on stderr saying what was written where."""
    print(f"wrote {what}: {path}", file=stream or sys.stderr)
