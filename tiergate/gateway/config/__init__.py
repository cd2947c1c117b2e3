"""Configuration: the typed, frozen settings tree read once at start-up from a YAML file and the environment.

Owns the shape of the config file (pydantic models, strict, unknown fields refused), its validation, its
defaults, the one-line errors naming the field (`errors`), what of a LiteLLM proxy config it reads (`litellm`),
where the master key comes from (`master_key`), and the reference made from the models (the JSON Schema and
docs/configuration.md, `reference`). Imports only `tiergate.policies` (the pure types settings are
made of, such as prices and escalation policies), pydantic and yaml: every other part of the gateway reads
settings, none is read by them.
"""
