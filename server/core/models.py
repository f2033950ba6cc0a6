"""Models loaded once and shared: each with its text and image micro-batchers, handed to every
collection that names it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from crossbit.server.core.batching import MicroBatcher

if TYPE_CHECKING:  # the model's module loads torch; the core only calls it
    from crossbit.encoders.model import HashModel

log = logging.getLogger(__name__)

SHIPPED = ("default", "mpnet-64")  # the models shipped by name (crossbit.encoders.model)


def model_spec(name: str | None) -> str:
    """The one spelling of a model: a shipped name, or a model folder's absolute path."""
    if not name or name == "default":
        return "default"
    if name in SHIPPED:
        return name
    return str(Path(name).expanduser().resolve())


class Encoders:
    """One model and the micro-batchers that feed it (its own, shared by its collections)."""

    def __init__(self, spec: str, model: HashModel, config, observe: Callable[[str], object]):
        self.spec, self.model = spec, model
        self.text = MicroBatcher(self._texts, config.max_batch, config.max_wait_ms,
                                 f"text-encoder-{_short(spec)}", observe("text"),
                                 config.text_workers)
        self.image = MicroBatcher(self._images, config.max_batch, config.max_wait_ms,
                                  f"image-encoder-{_short(spec)}", observe("image"))

    @property
    def bits(self) -> int:
        return self.model.bits

    def fingerprint(self) -> dict:
        return self.model.fingerprint()

    def _texts(self, texts: list[str]) -> list:
        enc = self.model.encode_texts(texts, batch_size=max(len(texts), 1))
        return list(zip(enc.codes, enc.embeddings))

    def _images(self, images: list) -> list:
        enc = self.model.encode_images(images, batch_size=max(len(images), 1))
        return list(zip(enc.codes, enc.embeddings))

    def close(self) -> None:
        self.text.close()
        self.image.close()


def _short(spec: str) -> str:
    return spec if spec in SHIPPED else Path(spec).name[:24]


class ModelPool:
    """Each model once, however many collections use it.

    Args:
        config: the server's settings (batch sizes, workers).
        loader: ``spec -> HashModel`` ready to encode (the server's, which picks the ONNX
            runtimes; torch stays out of the core).
        observe: ``name -> callback(batch size)`` for the metrics, or None.
        preloaded: models already loaded, by spec (tests share one).
    """

    def __init__(self, config, loader: Callable[[str], HashModel] | None,
                 observe: Callable[[str], object] | None = None,
                 preloaded: dict[str, HashModel] | None = None):
        self.config, self.loader = config, loader
        self.observe = observe or (lambda name: None)
        self._lock = threading.Lock()
        self._loaded: dict[str, Encoders] = {}
        for spec, model in (preloaded or {}).items():
            self._loaded[model_spec(spec)] = Encoders(model_spec(spec), model, config,
                                                      self.observe)

    def get(self, name: str | None) -> Encoders:
        """The model's encoders, loading it the first time (ValueError for an unknown model)."""
        spec = model_spec(name)
        with self._lock:
            found = self._loaded.get(spec)
            if found is None:
                if self.loader is None:
                    raise ValueError(f"model {name!r} is not loaded here")
                log.info("loading model %s", spec)
                try:
                    model = self.loader(spec)
                except (OSError, ValueError, KeyError) as exc:
                    raise ValueError(f"model {name!r} cannot be loaded ({exc}): give default, "
                                     "mpnet-64 or a model folder on the server (crossbit train "
                                     "--out makes one)") from None
                found = self._loaded[spec] = Encoders(spec, model, self.config, self.observe)
            return found

    def loaded(self) -> list[Encoders]:
        with self._lock:
            return list(self._loaded.values())

    def close(self) -> None:
        for encoders in self.loaded():
            encoders.close()
