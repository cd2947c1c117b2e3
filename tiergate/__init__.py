"""tiergate: an OpenAI-compatible LLM gateway that routes each request to the cheapest tier proven good enough.

The public API, for embedding the gateway in an application (everything else may change between releases):

    load_settings(path)                  the settings from a YAML file plus the environment (None: defaults)
    Settings, Deployment                 the typed, frozen settings and one upstream deployment in them
    create_app(settings, *, upstream_transport=None)
                                         the gateway as an ASGI (Starlette) app; its lifespan opens and
                                         closes every resource
    GatewayError                         the root of the errors the gateway answers with (OpenAI's shape)
    __version__

The names are imported on first use: `import tiergate` (the CLI's first step) loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tiergate._version import __version__

if TYPE_CHECKING:
    from tiergate.gateway.app import create_app
    from tiergate.gateway.config.deployments import Deployment
    from tiergate.gateway.config.settings import Settings, load_settings
    from tiergate.gateway.errors import GatewayError

__all__ = ["Deployment", "GatewayError", "Settings", "__version__", "create_app", "load_settings"]

_HOMES = {
    "create_app": "tiergate.gateway.app",
    "Deployment": "tiergate.gateway.config.deployments",
    "Settings": "tiergate.gateway.config.settings",
    "load_settings": "tiergate.gateway.config.settings",
    "GatewayError": "tiergate.gateway.errors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tiergate' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # imported once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
