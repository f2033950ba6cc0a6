"""The dual-encoder hash model: images and texts in, packed binary codes and float embeddings out."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crossbit.encoders.backbones import create_backbone, get_spec, preprocess
from crossbit.encoders.config import ModelConfig
from crossbit.encoders.heads import (  # noqa: F401 (Encoded, head_outputs: imported from here)
    Encoded,
    HashHead,
    head_outputs,
    item_outputs,
)
from crossbit.encoders.inputs import (  # noqa: F401 (ImageInput, load_image: imported from here)
    ImageInput,
    concat,
    empty,
    image_list,
    load_image,
    text_list,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
# models shipped in the repo (heads only), by name: --model NAME anywhere a model is given
SHIPPED_MODELS = {"default": DEFAULT_MODEL_DIR, "mpnet-64": Path(__file__).parent / "mpnet_model"}
WEIGHTS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"
BACKBONE_FILE = "image_backbone.safetensors"
TEXT_DIR = "text_model"


def pick_device(device: str | None = None) -> torch.device:
    """The given device, else CUDA when one is visible, else the CPU (never assumed)."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HashModel:
    """Image and text encoders with their hash heads.

    Backbones load lazily, on first use of each modality, so a text-only caller
    never pays for the image backbone.
    """

    def __init__(self, config: ModelConfig, image_head: HashHead | None = None,
                 text_head: HashHead | None = None, device: str | None = None):
        self.config = config
        self.device = pick_device(device)
        self.semantics = None
        if config.semantics:
            from crossbit.encoders.semantics import ClassSemantics

            self.semantics = ClassSemantics(config.image_feature_dim, config.text_feature_dim)
            self.semantics.to(self.device)
        self.image_head = image_head or self._new_head(self.image_input_dim)
        self.text_head = text_head or self._new_head(config.text_feature_dim)
        for head in (self.image_head, self.text_head):
            head.eval().to(self.device)
        self.name = ""  # where it was loaded from ("default" for the shipped model)
        self._backbone = None
        self._text = None
        self.image_runtime = None  # optional replacement for the torch backbone (ONNX Runtime)
        self.text_runtime = None  # optional replacement for the torch text encoder (ONNX Runtime)
        self.head_runtimes: dict = {}  # "image"/"text" -> OnnxHead (runtime.use_head_runtime)

    def fingerprint(self) -> dict:
        """What identifies the codes this model makes: bits, backbones and a hash of the head
        weights. Codes of two models with different fingerprints are not comparable."""
        import hashlib

        digest = hashlib.sha256()
        c = self.config
        weights = c.image_weights
        if weights and os.path.exists(weights):  # a tuned backbone: its name and size
            weights = f"{Path(weights).name}:{os.path.getsize(weights)}"
        text = Path(c.text_model).name
        if os.path.isdir(c.text_model):  # a tuned or supplied text model: its weights count
            from crossbit.encoders.text_models import weights_digest

            text = f"{text}:{weights_digest(c.text_model)}"
        for part in (c.bits, c.image_backbone, weights, text, c.embed_dim):
            digest.update(repr(part).encode())
        heads = [("image.", self.image_head), ("text.", self.text_head)]
        if self.semantics is not None:
            heads.append(("semantic.", self.semantics))
        for prefix, module in heads:
            for name, tensor in sorted(module.state_dict().items()):
                digest.update((prefix + name).encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {"fingerprint": digest.hexdigest()[:16], "bits": c.bits,
                "image_backbone": c.image_backbone, "text_model": Path(c.text_model).name,
                "name": self.name or "unsaved model"}

    def _new_head(self, in_dim: int) -> HashHead:
        c = self.config
        return HashHead(in_dim, c.bits, c.hidden, c.dropout, c.embed_dim)

    @property
    def bits(self) -> int:
        return self.config.bits

    @property
    def image_input_dim(self) -> int:
        """Width of the image head's input: pooled features (+ class semantics)."""
        extra = self.config.text_feature_dim if self.config.semantics else 0
        return self.config.image_feature_dim + extra

    def image_inputs(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Backbone features -> image head input (class semantics appended when enabled)."""
        features = torch.as_tensor(features, device=self.device).float()
        if self.semantics is None:
            return features
        return torch.cat([features, self.semantics(features)], dim=1)

    @property
    def embedding_dim(self) -> int:
        return self.config.embed_dim or self.config.bits

    # -- lazily built encoders -------------------------------------------------------------
    @property
    def backbone(self) -> torch.nn.Module:
        if self._backbone is None:
            self._backbone, _ = create_backbone(self.config.image_backbone, self.config.image_weights)
            self._backbone.to(self.device)
        return self._backbone

    @property
    def text_encoder(self):
        if self._text is None:
            from crossbit.encoders.text_models import TextEncoder

            self._text = TextEncoder(self.config.text_model).to(self.device)
        return self._text

    @text_encoder.setter
    def text_encoder(self, encoder) -> None:
        """Use an already built text encoder (training builds one to size the heads)."""
        self._text = encoder

    # -- features ------------------------------------------------------------------------
    # An item's features, code and embedding are a function of that item and the model alone
    # (not of the batch, its order, padding or batch-mates): every item goes through the
    # head on its own, and through the encoder on its own unless the runtime promises rows
    # that do not mix (``batch_invariant``: the ONNX text encoder and image backbone).
    # ``alone=False`` lets the torch runtimes batch, for training features only.
    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image], flip: bool = False,
                       alone: bool = True) -> torch.Tensor:
        """Backbone features of decoded images, (n, image_feature_dim) on the model's device.

        Args:
            images: decoded images.
            flip: of the horizontally flipped images.
            alone: each image's features its own, not moved by the others (the encode
                calls' way): one run per image, or one run of them all on a runtime whose
                rows do not mix (``batch_invariant``); False lets the torch backbone batch.
        """
        spec = get_spec(self.config.image_backbone)
        if not images:
            return torch.zeros((0, self.config.image_feature_dim), device=self.device)
        if alone and not getattr(self.image_runtime, "batch_invariant", False):
            return torch.cat([self._backbone_run(preprocess([image], spec, flip=flip))
                              for image in images])
        return self._backbone_run(preprocess(list(images), spec, flip=flip))

    def _backbone_run(self, batch: torch.Tensor) -> torch.Tensor:
        if self.image_runtime is not None:
            return torch.from_numpy(self.image_runtime(batch.numpy())).to(self.device)
        return self.backbone(batch.to(self.device)).float()

    @torch.no_grad()
    def text_features(self, texts: Sequence[str], alone: bool = True) -> torch.Tensor:
        """Mean-pooled text model features, (n, text_feature_dim) on the model's device.

        Args:
            texts: the texts.
            alone: each text's features its own, not moved by the others (the encode
                calls' way): one run per text over its own tokens, or one call of them all on
                a runtime whose rows do not mix (``batch_invariant``); False lets the torch
                runtime pad a batch to its longest.
        """
        if not texts:
            return torch.zeros((0, self.config.text_feature_dim), device=self.device)
        if self.text_runtime is not None:  # one call when it promises rows of their own
            together = not alone or getattr(self.text_runtime, "batch_invariant", False)
            rows = [self.text_runtime(list(texts))] if together \
                else [self.text_runtime([t]) for t in texts]
            return torch.from_numpy(np.concatenate(rows)).to(self.device)
        if alone:
            return torch.cat([self.text_encoder([t]).float() for t in texts])
        return self.text_encoder(list(texts)).float()

    def encode_image_features(self, features: torch.Tensor | np.ndarray) -> Encoded:
        """Codes of images from their backbone features (see :meth:`image_features`), each
        row's through the class semantics and the image head its own."""
        runtime = self.head_runtimes.get("image")
        if runtime is not None and runtime.current():
            return runtime(torch.as_tensor(features).float().cpu().numpy())
        features = torch.as_tensor(features, device=self.device).float()
        return item_outputs(self.image_head, features, self.image_inputs)

    def encode_text_features(self, features: torch.Tensor | np.ndarray) -> Encoded:
        """Codes of texts from their features (see :meth:`text_features`), each row's its
        own: the head on ONNX Runtime (whole batches) where set, else one row at a time."""
        runtime = self.head_runtimes.get("text")
        if runtime is not None and runtime.current():
            return runtime(torch.as_tensor(features).float().cpu().numpy())
        return item_outputs(self.text_head, torch.as_tensor(features, device=self.device))

    # -- the public encode calls -----------------------------------------------------------
    def encode_images(self, images: Iterable[ImageInput], batch_size: int = 32) -> Encoded:
        """Encode images (PIL images, encoded bytes or file paths), each on its own.

        Args:
            images: a list of images; empty in, empty out.
            batch_size: images decoded and held at once (the codes do not depend on it).

        Returns:
            :class:`Encoded` with codes (n, bits // 8) uint8 and embeddings (n, d) float32.
        """
        images = image_list(images)
        if not images:
            return empty(self.bits, self.embedding_dim)
        parts = []
        for start in range(0, len(images), batch_size):
            decoded = [load_image(item) for item in images[start : start + batch_size]]
            parts.append(self.encode_image_features(self.image_features(decoded)))
        return concat(parts)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> Encoded:
        """Encode texts, each on its own (its code is the same in any batch).

        Args:
            texts: a list of strings; empty in, empty out.
            batch_size: texts handed to the encoder at once (the codes do not depend on it).

        Returns:
            :class:`Encoded` with codes (n, bits // 8) uint8 and embeddings (n, d) float32.

        Raises:
            TypeError: for a bare string or non-string items.
        """
        texts = text_list(texts)
        if not texts:
            return empty(self.bits, self.embedding_dim)
        parts = []
        for start in range(0, len(texts), batch_size):
            parts.append(self.encode_text_features(self.text_features(texts[start : start + batch_size])))
        return concat(parts)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, with_backbones: bool = False,
             with_text_model: bool = False) -> None:
        """Write the heads as safetensors and the config as JSON into ``directory``.

        Args:
            with_backbones: also write the (fine-tuned) image backbone and text model
                beside the heads, and point the config at them (relative paths).
            with_text_model: also write the (tuned) text model, not the image backbone.
        """
        from safetensors.torch import save_file

        from crossbit.encoders.backbones import backbone_state

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if with_backbones:
            state = {k: v.detach().cpu().contiguous()
                     for k, v in backbone_state(self.backbone).items()}
            save_file(state, str(directory / BACKBONE_FILE))
            self.config.image_weights = BACKBONE_FILE
        if with_backbones or with_text_model:
            self.text_encoder.model.save_pretrained(directory / TEXT_DIR)
            self.text_encoder.tokenizer.save_pretrained(directory / TEXT_DIR)
            self.config.text_model = TEXT_DIR
        tensors = {f"image.{k}": v.detach().cpu().contiguous()
                   for k, v in self.image_head.state_dict().items()}
        tensors.update({f"text.{k}": v.detach().cpu().contiguous()
                        for k, v in self.text_head.state_dict().items()})
        if self.semantics is not None:
            tensors.update({f"semantic.{k}": v.detach().cpu().contiguous()
                            for k, v in self.semantics.state_dict().items()})
        save_file(tensors, str(directory / WEIGHTS_FILE))
        (directory / CONFIG_FILE).write_text(self.config.to_json() + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None, device: str | None = None) -> HashModel:
        """Rebuild a model from a directory written by :meth:`save` (the shipped default if None)."""
        from safetensors.torch import load_file

        if directory is None or (str(directory) in SHIPPED_MODELS and not Path(directory).exists()):
            directory = SHIPPED_MODELS[str(directory or "default")]
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory / name} missing: not a crossbit model directory")
        config = ModelConfig.from_json((directory / CONFIG_FILE).read_text())
        if config.image_weights and not os.path.isabs(config.image_weights):
            config.image_weights = str(directory / config.image_weights)
        if (directory / config.text_model).is_dir():
            config.text_model = str(directory / config.text_model)
        model = cls(config, device=device)
        tensors = load_file(str(directory / WEIGHTS_FILE))
        parts = [("image.", model.image_head), ("text.", model.text_head)]
        if model.semantics is not None:
            parts.append(("semantic.", model.semantics))
        for prefix, head in parts:
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            head.load_state_dict(state)
        log.info("model %s: %d bits, %s + %s", directory, config.bits, config.image_backbone,
                 config.text_model)
        names = {path: name for name, path in SHIPPED_MODELS.items()}
        model.name = names.get(directory, str(directory))
        return model
