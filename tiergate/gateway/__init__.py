"""The data plane: ASGI app, upstream client, streaming relay and everything on the request path."""
