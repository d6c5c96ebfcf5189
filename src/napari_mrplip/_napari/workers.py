"""Thread-worker plumbing: run a heatmap computation off the main thread, cancel stale work.

A :class:`HeatmapJob` wraps one ``napari.qt.threading.GeneratorWorker`` over
``engine.run(slide, request, cancel)``. Results reach the caller's ``on_result`` on the
main thread (the worker's ``yielded`` signal); :meth:`HeatmapJob.cancel` sets the engine's
cancel ``Event`` *and* quits the worker, and results of a cancelled job are dropped even if
they were already queued on the event loop.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


class HeatmapJob:
    """One running (or finished) heatmap computation.

    Parameters
    ----------
    produce : callable
        ``produce(cancel: threading.Event) -> Iterator[HeatmapResult]``; runs in a worker
        thread (load the model, then iterate the engine).
    on_result : callable
        ``on_result(job, result)`` on the main thread for every yielded result.
    on_done : callable
        ``on_done(job)`` on the main thread when the job finished or was cancelled.
    on_error : callable
        ``on_error(job, exc)`` on the main thread when ``produce`` raised.
    """

    def __init__(
        self,
        produce: Callable[[threading.Event], Iterator],
        on_result: Callable,
        on_done: Callable,
        on_error: Callable,
        label: str = "",
    ):
        from napari.qt.threading import create_worker

        self.label = label
        self.cancel_event = threading.Event()
        self.results = 0
        self.last = None
        self.error: BaseException | None = None
        self._finished = False
        self._on_result, self._on_done, self._on_error = on_result, on_done, on_error
        self.worker = create_worker(
            self._generate, produce, _start_thread=False, _ignore_errors=True
        )
        self.worker.yielded.connect(self._yielded)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finish)

    def _generate(self, produce):
        for result in produce(self.cancel_event):
            if self.cancel_event.is_set():
                return
            yield result

    def start(self) -> HeatmapJob:
        self.worker.start()
        return self

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def finished(self) -> bool:
        return self._finished

    def cancel(self) -> None:
        """Ask the engine to stop at its next batch and quit the worker."""
        self.cancel_event.set()
        self.worker.quit()

    def _yielded(self, result) -> None:
        if self.cancel_event.is_set():
            return
        self.results += 1
        self.last = result
        self._on_result(self, result)

    def _errored(self, exc: BaseException) -> None:
        self.error = exc
        if not self.cancel_event.is_set():
            self._on_error(self, exc)

    def _finish(self) -> None:
        self._finished = True
        self._on_done(self)


def import_torch_safely() -> None:
    """Import torch and open_clip on the main thread, before a worker thread needs them.

    Importing a large extension module first inside a worker thread while Qt runs the main
    loop is slow and fragile; the panels call this from their button handlers. Triton,
    whose LLVM crashes next to Mesa's, is already kept out of this process by
    ``napari_mrplip._napari`` itself (see ``_keep_triton_out``).
    """
    if "torch" in sys.modules and "open_clip" in sys.modules:
        return
    import open_clip  # noqa: F401
    import torch  # noqa: F401
