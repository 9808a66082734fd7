"""edgeft: fine-tune language models across a pool of edge devices and an edge server."""

__version__ = "0.1.0"
