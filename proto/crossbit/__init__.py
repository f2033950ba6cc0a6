"""crossbit: cross-modal retrieval over binary codes (images and texts in one Hamming space)."""

__version__ = "0.1.0"
