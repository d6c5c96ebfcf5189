"""``VLMCaptioner``: captions from a local vision-language model through transformers.

The directory must be in the transformers (llava-hf) format: ``config.json`` of a
``LlavaForConditionalGeneration`` (or any ``AutoModelForImageTextToText``), weights, and a
processor (tokenizer + image processor + chat template). Quilt-LLaVA as published uses the
original LLaVA repository's format; convert it with transformers'
``convert_llava_weights_to_hf.py`` first. Nothing is downloaded: ``local_files_only``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The prompt MR-PLIP used with Quilt-LLaVA.
DEFAULT_PROMPT = "Can you provide a concise description of the histopathology image shown?"


class VLMLoadError(ValueError):
    """The VLM directory is missing or not a transformers vision-language model."""


class VLMCaptioner:
    """Greedy-decoded captions from a local LLaVA-style model.

    Parameters
    ----------
    model_dir : str or Path
        A transformers model directory (see module docstring).
    prompt : str
        The user turn; the image is placed before it.
    max_new_tokens : int
        Caption length cap.
    device : str
        ``"cpu"``, ``"cuda"``, ...
    """

    name = "vlm"

    def __init__(
        self,
        model_dir: str | Path,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 64,
        device: str = "cpu",
    ) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise VLMLoadError(
                f"{self.model_dir}: no config.json: not a transformers model directory. Pass a "
                "local llava-hf-format model (e.g. Quilt-LLaVA converted with transformers' "
                "convert_llava_weights_to_hf.py), or use the offline StainCaptioner."
            )
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.device = device
        self.version = f"{self.model_dir.resolve()}:{prompt}:{self.max_new_tokens}"
        self._model = None
        self._processor = None

    def _load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self._processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(
                self.model_dir, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as e:
            raise VLMLoadError(f"{self.model_dir}: cannot load the model or processor: {e}") from e
        self._model = model.to(self.device).eval()

    def _inputs(self, tiles: np.ndarray):
        from PIL import Image

        proc = self._processor
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}
        ]
        if getattr(proc, "chat_template", None):
            text = proc.apply_chat_template(messages, add_generation_prompt=True)
        else:
            text = f"USER: <image>\n{self.prompt} ASSISTANT:"
        images = [Image.fromarray(np.ascontiguousarray(t[..., :3])) for t in tiles]
        # Left padding: every row's prompt ends where generation starts (decoder-only LMs).
        proc.tokenizer.padding_side = "left"
        return proc(images=images, text=[text] * len(images), padding=True, return_tensors="pt").to(
            self.device
        )

    def caption(self, tile: np.ndarray, magnification: float) -> str:
        """Greedy caption of a ``(H, W, 3)`` uint8 tile (the magnification is not used)."""
        return self.caption_batch(np.asarray(tile)[None], [magnification])[0]

    def caption_batch(self, tiles: np.ndarray, magnifications=None) -> list[str]:
        """Greedy captions of ``(B, H, W, 3)`` uint8 tiles in one padded batched ``generate``.

        Every row has the same prompt, so rows are only padded where their image token counts
        differ; rows that finish early are padded until the longest is done.
        """
        import torch

        if self._model is None:
            self._load()
        if len(tiles) == 0:
            return []
        inputs = self._inputs(tiles)
        with torch.inference_mode():
            out = self._model.generate(
                **inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = self._processor.batch_decode(new, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_model"] = state["_processor"] = None
        return state
