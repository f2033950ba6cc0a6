"""Image-text datasets: captions CSV, COCO captions, Karpathy splits, multi-label CSV."""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file and row."""


@dataclass
class Pairs:
    """Images and captions; ``caption_image[j]`` is the index of caption j's image."""

    images: list[str]  # image file paths
    captions: list[str]
    caption_image: np.ndarray  # int64, (n_captions,)
    labels: np.ndarray | None = None  # optional (n_images, n_labels) 0/1 matrix
    label_names: list[str] = field(default_factory=list)
    skipped: int = 0  # rows skipped on request (missing images, empty captions)

    def __post_init__(self) -> None:
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)
        if len(self.caption_image) != len(self.captions):
            raise ValueError("caption_image must have one entry per caption")
        if len(self.captions) and (self.caption_image.min() < 0 or
                                   self.caption_image.max() >= len(self.images)):
            raise ValueError("caption_image refers to an image that does not exist")

    def __len__(self) -> int:
        return len(self.captions)


class _Builder:
    """Collects (image, caption) rows, checking files and skipping only when asked."""

    def __init__(self, source: str, images_dir: str | os.PathLike, skip_bad: bool):
        self.source, self.images_dir, self.skip_bad = source, Path(images_dir), skip_bad
        self.index: dict[str, int] = {}
        self.images: list[str] = []
        self.captions: list[str] = []
        self.caption_image: list[int] = []
        self.skipped = 0
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images_dir}")

    def bad(self, where: str, why: str) -> None:
        if not self.skip_bad:
            raise DatasetError(f"{self.source}, {where}: {why}")
        self.skipped += 1

    def image(self, name: str, where: str) -> int | None:
        if name in self.index:
            return self.index[name]
        path = self.images_dir / name
        if not path.is_file():
            self.bad(where, f"image file not found: {path}")
            return None
        self.index[name] = len(self.images)
        self.images.append(str(path))
        return self.index[name]

    def add(self, name: str, caption: str, where: str) -> None:
        caption = (caption or "").strip()
        if not caption:
            self.bad(where, "empty caption")
            return
        i = self.image(name, where)
        if i is not None:
            self.captions.append(caption)
            self.caption_image.append(i)

    def build(self) -> Pairs:
        if self.skipped:
            log.warning("%s: skipped %d bad rows (as asked)", self.source, self.skipped)
        if not self.captions:
            raise DatasetError(f"{self.source}: no usable image-caption pairs")
        return Pairs(self.images, self.captions, np.array(self.caption_image), skipped=self.skipped)


def _read_split(split: str | os.PathLike | None) -> set[str] | None:
    if split is None:
        return None
    names = {line.strip() for line in Path(split).read_text().splitlines() if line.strip()}
    if not names:
        raise DatasetError(f"{split}: split file is empty")
    return names


def load_captions_csv(path: str | os.PathLike, images_dir: str | os.PathLike,
                      split: str | os.PathLike | None = None, skip_bad: bool = False) -> Pairs:
    """A CSV with header ``image,caption`` (the Flickr8k layout), optionally limited to a split.

    Args:
        path: the CSV file.
        images_dir: the folder the image names are relative to.
        split: optional file with one image name per line.
        skip_bad: skip rows with a missing image or empty caption (counted and logged)
            instead of raising :class:`DatasetError`.
    """
    keep = _read_split(split)
    builder = _Builder(str(path), images_dir, skip_bad)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"image", "caption"} <= set(reader.fieldnames):
            raise DatasetError(
                f"{path}: expected columns 'image,caption', found {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=2):
            name = (row["image"] or "").strip()
            if keep is not None and name not in keep:
                continue
            builder.add(name, row["caption"], f"row {row_number}")
    return builder.build()


def load_coco_captions(path: str | os.PathLike, images_dir: str | os.PathLike,
                       skip_bad: bool = False) -> Pairs:
    """COCO ``captions_*.json`` (images + annotations) with its image folder."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations"):
        if key not in data:
            raise DatasetError(f"{path}: not a COCO captions file (no {key!r})")
    files = {img["id"]: img["file_name"] for img in data["images"]}
    builder = _Builder(str(path), images_dir, skip_bad)
    for n, ann in enumerate(data["annotations"]):
        where = f"annotation {n} (id {ann.get('id')})"
        if ann.get("image_id") not in files:
            builder.bad(where, f"image_id {ann.get('image_id')} not among the images")
            continue
        builder.add(files[ann["image_id"]], ann.get("caption", ""), where)
    return builder.build()


def load_karpathy(path: str | os.PathLike, images_dir: str | os.PathLike, split: str = "test",
                  skip_bad: bool = False) -> Pairs:
    """Karpathy-split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``, ...).

    Args:
        split: "train", "val", "test" or "restval" (restval counts as train too).
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if "images" not in data:
        raise DatasetError(f"{path}: not a Karpathy split file (no 'images')")
    wanted = {split, "restval"} if split == "train" else {split}
    builder = _Builder(str(path), images_dir, skip_bad)
    for n, img in enumerate(data["images"]):
        if img.get("split") not in wanted:
            continue
        name = os.path.join(img.get("filepath", ""), img["filename"])
        for s, sentence in enumerate(img.get("sentences", [])):
            builder.add(name, sentence.get("raw", ""), f"image {n} sentence {s}")
    return builder.build()


def load_multilabel_csv(path: str | os.PathLike, images_dir: str | os.PathLike,
                        skip_bad: bool = False) -> Pairs:
    """A CSV with columns ``image,text,labels`` (labels separated by ';'), MIRFLICKR/NUS-WIDE style.

    Each row is one image with its text (tags or a caption) and its labels.
    """
    builder = _Builder(str(path), images_dir, skip_bad)
    label_sets: list[set[str]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"image", "text", "labels"} <= set(reader.fieldnames):
            raise DatasetError(
                f"{path}: expected columns 'image,text,labels', found {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=2):
            labels = {x.strip() for x in (row["labels"] or "").split(";") if x.strip()}
            if not labels:
                builder.bad(f"row {row_number}", "no labels")
                continue
            before = len(builder.captions)
            builder.add((row["image"] or "").strip(), row["text"], f"row {row_number}")
            if len(builder.captions) > before and len(label_sets) < len(builder.images):
                label_sets.append(labels)
    pairs = builder.build()
    names = sorted(set().union(*label_sets))
    column = {name: k for k, name in enumerate(names)}
    matrix = np.zeros((len(pairs.images), len(names)), dtype=np.uint8)
    for i, labels in enumerate(label_sets):
        matrix[i, [column[x] for x in labels]] = 1
    pairs.labels, pairs.label_names = matrix, names
    return pairs
