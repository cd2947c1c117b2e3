"""Data files that ship inside the litellm wheel, read without importing litellm.

`import litellm` costs seconds and reaches for the network; tiergate only needs two of its files: the model
price map and tiktoken's encodings (so token counting never downloads anything).
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

import orjson


@cache
def package_dir() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the litellm package is not installed; reinstall tiergate")
    return Path(next(iter(spec.submodule_search_locations)))


def use_bundled_tiktoken_encodings() -> None:
    """Point tiktoken at the encodings bundled with litellm, unless the operator chose a cache already."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(package_dir() / "litellm_core_utils" / "tokenizers"))


@cache
def price_map() -> dict[str, dict[str, object]]:
    return orjson.loads((package_dir() / "model_prices_and_context_window_backup.json").read_bytes())  # type: ignore[no-any-return]
