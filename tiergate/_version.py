"""The release (its own leaf module, so that any module may import it without importing `tiergate`'s
public API and the gateway behind it)."""

__version__ = "0.1.0"
