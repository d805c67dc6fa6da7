"""vidseg: video object segmentation toolkit."""

from vidseg.errors import VidsegError

__version__ = "0.1.0"
__all__ = ["VidsegError", "__version__"]
