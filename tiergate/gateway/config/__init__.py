"""Configuration: the typed, frozen settings tree read once at start-up from a YAML file and the environment.

Owns the shape of the config file, its validation and its defaults. Imports only `tiergate.policies` (the
pure types settings are made of, such as prices and escalation policies): every other part of the gateway
reads settings, none is read by them.
"""
