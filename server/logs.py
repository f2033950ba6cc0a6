"""Structured logging: one JSON object per line (or plain text), set up once per process."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z", "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(fmt: str = "auto", level: str = "INFO") -> None:
    """Log lines to stderr: text on a terminal and JSON elsewhere (``auto``), or as asked."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_third_parties()


NOISY = ("faiss", "faiss.loader", "httpx", "urllib3", "filelock", "huggingface_hub",
         "transformers", "onnxruntime", "PIL", "matplotlib")


def quiet_third_parties(level: int = logging.WARNING) -> None:
    """Other libraries' INFO chatter (faiss's AVX512 probing...) stays out of crossbit's log."""
    for name in NOISY:
        logging.getLogger(name).setLevel(level)
