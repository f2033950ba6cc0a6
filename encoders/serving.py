"""The model a server (or ``crossbit reindex``) encodes with: a light model, or a full one on its runtimes."""

from __future__ import annotations

import logging

from crossbit.encoders.light import LightModel, light_model_dir

log = logging.getLogger(__name__)


def load_serving_model(name: str | None = None, device: str | None = None, runtime: str = "auto",
                       text_runtime: str = "auto", text_threads: int | None = None):
    """The model ``name`` ready to encode as the server does.

    A light model folder (or, without torch, the default model's light model) loads as a
    :class:`LightModel`, importing no torch; any other model loads as a ``HashModel`` with
    its ONNX Runtime encoders and heads (``runtime.py``), as before.

    Args:
        name: a shipped name (None: the default), a model folder or a light model folder.
        device: torch device of a full model (None: CUDA if visible, else the CPU); a light
            model runs on the CPU only.
        runtime: the image backbone's runtime (``auto``, ``onnx``, ``torch``).
        text_runtime: the text encoder's (``auto``, ``onnx``, ``int8``, ``torch``).
        text_threads: ONNX Runtime threads of the text encoder.

    Returns:
        a ``LightModel`` or a ``HashModel``.

    Raises:
        ValueError: a light model asked for a device or runtime it does not have, or,
            without torch, a model only the full install can serve.
    """
    light = light_model_dir(name)
    if light is not None:
        model = LightModel(light, text_threads)
        check_light_settings(model, device, runtime, text_runtime)
        log.info("light model %s from %s: %d bits, text %s (ONNX Runtime, no torch)",
                 model.name, light, model.bits, model.text_runtime.precision)
        return model
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import (
        one_torch_thread,
        use_head_runtime,
        use_image_runtime,
        use_text_runtime,
    )

    model = HashModel.load(name, device=device)
    use_image_runtime(model, runtime)
    use_text_runtime(model, text_runtime, text_threads)
    use_head_runtime(model)
    one_torch_thread(model)  # parallelism from the batchers' workers (BENCHMARKS.md)
    return model


def check_light_settings(model: LightModel, device: str | None, runtime: str,
                         text_runtime: str) -> None:
    """Refuse, in one line, settings a light model cannot honour (it runs its own ONNX graphs
    on the CPU)."""
    if device and device != "cpu":
        raise ValueError(f"a light model runs on the CPU only (ONNX Runtime), not on {device}: "
                         "serve the full model for a GPU")
    if runtime not in ("auto", "onnx"):
        raise ValueError(f"a light model runs its image backbone on ONNX Runtime, not {runtime}")
    precision = model.text_runtime.precision
    if text_runtime != "auto" and text_runtime != {"int8": "int8", "fp32": "onnx"}[precision]:
        raise ValueError(f"this light model's text encoder is ONNX {precision} (as the full "
                         f"install's auto chose), not {text_runtime}: export another light "
                         "model for another text runtime, or leave --text-runtime auto")
