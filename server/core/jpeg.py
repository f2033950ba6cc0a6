"""A JPEG's frame and scans, found by walking its marker sequence as libjpeg reads it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

SOI, EOI, SOS, DHP, EXP = 0xD8, 0xD9, 0xDA, 0xDE, 0xDF
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
LOSSLESS = {0xC3, 0xC7, 0xCB, 0xCF}
HIERARCHICAL = {0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF}
STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0..7 carry no length
# where entropy-coded data ends: FF (and fill FFs) before a byte that is neither a stuffed
# zero nor a restart marker
_SCAN_END = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
_MARKER = re.compile(rb"\xff+[^\x00\xff]")  # between segments libjpeg skips other bytes

# A Huffman-coded JPEG spends at least one bit on each 8x8 block of each component (its DC
# difference), and a lossless one at least a bit per sample; fewer than half that means
# scans are missing or cut short, and libjpeg would fill the picture with grey.
FLOOR_MARGIN = 2


@dataclass
class Scan:
    components: tuple[int, ...]  # component ids this scan codes
    start: int  # spectral selection start (0: the scan codes DC, or a lossless predictor)
    data_bytes: int  # entropy-coded bytes up to the next marker


@dataclass
class Frame:
    """A JPEG's frame header (SOFn) and its scans, up to its end of image."""

    marker: int  # 0xC0..0xCF
    width: int
    height: int
    components: dict[int, tuple[int, int]]  # id -> (horizontal, vertical) sampling factors
    scans: list[Scan] = field(default_factory=list)

    @property
    def arithmetic(self) -> bool:
        return self.marker >= 0xC9

    @property
    def kind(self) -> str:
        coding = "arithmetic" if self.arithmetic else "Huffman"
        if self.marker in LOSSLESS:
            return f"lossless {coding}"
        return f"{'progressive' if self.marker in PROGRESSIVE else 'sequential'} {coding}"

    def min_coded_bits(self) -> int:
        """The fewest entropy-coded bits a whole image of this frame can have (0 for
        arithmetic coding, which may spend far less than a bit on a likely symbol)."""
        if self.arithmetic:
            return 0
        hmax = max(h for h, _ in self.components.values())
        vmax = max(v for _, v in self.components.values())
        total = 0
        for h, v in self.components.values():
            w, ht = math.ceil(self.width * h / hmax), math.ceil(self.height * v / vmax)
            total += w * ht if self.marker in LOSSLESS else math.ceil(w / 8) * math.ceil(ht / 8)
        return total

    def missing(self) -> str:
        """Why the scans cannot make the whole picture, or "" when they can."""
        lossless = self.marker in LOSSLESS  # its scans start at a predictor number, not 0
        coded = {c for scan in self.scans if lossless or scan.start == 0
                 for c in scan.components}
        absent = sorted(set(self.components) - coded)
        if not self.scans:
            return "it has no scan"
        if absent:
            return f"no scan codes component {absent[0]}"
        data = sum(scan.data_bytes for scan in self.scans)
        if data * 8 * FLOOR_MARGIN < self.min_coded_bits():
            return (f"{data} bytes of scan data cannot hold {self.width}x{self.height} pixels "
                    f"of a {self.kind} JPEG")
        return ""


def read_frame(data: bytes) -> Frame:
    """Walk the markers from SOI to EOI: the frame header and every scan, as libjpeg sees them.

    Args:
        data: the file's bytes (a JPEG, or the first image of an MPO).

    Returns:
        The frame, with its scans and their entropy-coded sizes.

    Raises:
        ValueError: no SOI, no frame header (SOFn) before the first scan, two frame headers,
            a hierarchical (differential) JPEG, a segment running past the end, a scan
            naming a component the frame lacks.
    """
    data = bytes(data)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (it does not start with SOI)")
    pos, frame = 2, None
    while True:
        found = _MARKER.search(data, pos)
        if found is None:
            break  # the end of the data: libjpeg would warn and stop too
        marker, pos = data[found.end() - 1], found.end()
        if marker == EOI:
            break
        if marker == SOI:
            raise ValueError("JPEG with a second start of image before its end")
        if marker in STANDALONE:
            continue
        if not 0xC0 <= marker <= 0xFE:
            raise ValueError(f"JPEG with an unknown marker FF{marker:02X} at byte {pos - 2}")
        if pos + 2 > len(data):
            raise ValueError(f"JPEG cut inside the FF{marker:02X} segment at byte {pos - 2}")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise ValueError(f"JPEG segment FF{marker:02X} at byte {pos - 2} claims {length} "
                             f"bytes, past the end of the data")
        body, pos = data[pos + 2:pos + length], pos + length
        if marker in SOF_MARKERS:
            if frame is not None:
                raise ValueError("JPEG with two frame headers (SOF)")
            frame = _frame(marker, body)
        elif marker in (DHP, EXP):
            raise ValueError("hierarchical JPEG (DHP/EXP) is not supported")
        elif marker == SOS:
            if frame is None:
                raise ValueError("JPEG with a scan before any frame header (SOF)")
            end = _SCAN_END.search(data, pos)
            stop = end.start() if end else len(data)
            frame.scans.append(_scan(body, frame, stop - pos))
            pos = stop
    if frame is None:
        raise ValueError("JPEG without a frame header (no SOFn marker before its first scan)")
    return frame


def _frame(marker: int, body: bytes) -> Frame:
    if marker in HIERARCHICAL:
        raise ValueError(f"hierarchical JPEG (SOF{marker - 0xC0}) is not supported")
    if len(body) < 6 or len(body) < 6 + 3 * body[5]:
        raise ValueError("JPEG frame header (SOF) too short")
    height, width, count = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5]
    components = {}
    for i in range(count):
        cid, sampling = body[6 + 3 * i], body[7 + 3 * i]
        h, v = sampling >> 4, sampling & 15
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise ValueError(f"JPEG component {cid} has sampling factors {h}x{v} (1 to 4)")
        components[cid] = (h, v)
    if not components:
        raise ValueError("JPEG frame header (SOF) with no components")
    return Frame(marker, width, height, components)


def _scan(body: bytes, frame: Frame, data_bytes: int) -> Scan:
    count = body[0] if body else 0
    if count < 1 or len(body) < 1 + 2 * count + 3:
        raise ValueError("JPEG scan header (SOS) too short")
    ids = tuple(body[1 + 2 * i] for i in range(count))
    unknown = [c for c in ids if c not in frame.components]
    if unknown:
        raise ValueError(f"JPEG scan codes component {unknown[0]}, which the frame lacks")
    return Scan(ids, body[1 + 2 * count], data_bytes)
