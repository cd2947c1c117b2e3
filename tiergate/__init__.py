"""tiergate: an OpenAI-compatible LLM gateway that routes each request to the cheapest tier proven good enough."""

__version__ = "0.1.0"
