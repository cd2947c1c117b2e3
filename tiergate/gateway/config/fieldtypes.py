"""The two kinds of config model and the field types every section is made of.

A shape the gateway reads at run time (or that shares its fields with one) is a `settings_dataclass`: a
frozen pydantic dataclass, so it is built by keyword in Python and copied with `dataclasses.replace`. A shape
that only describes the file is a `FileModel`, whose `model_fields_set` tells a tenant override which fields
it writes. Both are strict (2.7 is not an integer, "yes" is not a boolean) and refuse unknown fields.

A document is validated in pydantic's JSON mode (`validate`): YAML gives JSON-shaped data, and JSON mode
turns a list into a tuple and a mapping into a dataclass without coercing any scalar. (So no validator here
runs before a container: its output would be validated as Python data, where a list is not a tuple.)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, TypeVar, cast, dataclass_transform

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic import dataclasses as pydantic_dataclasses
from pydantic_core import PydanticCustomError, core_schema

from tiergate.gateway.config.errors import OWN, ConfigError, from_validation_error, shown_value
from tiergate.policies.tiers import TIERS

T = TypeVar("T")
STRICT = ConfigDict(strict=True, extra="forbid")


class FileModel(BaseModel):
    """A part of the config file that the gateway reads only through what it converts it into."""

    model_config = ConfigDict(**STRICT, frozen=True)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field, Field))
def settings_dataclass(cls: type[T]) -> type[T]:
    """A frozen, slotted, keyword-only pydantic dataclass with the config's strictness."""
    made = pydantic_dataclasses.dataclass(frozen=True, slots=True, kw_only=True, config=STRICT)(cls)
    return cast(type[T], made)


@dataclass(frozen=True, slots=True)
class OneOf:
    """Field metadata: the value must be one of `options` (validated and published as an enum)."""

    options: tuple[str, ...]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.literal_schema(list(self.options))


# `env:NAME` is tiergate's spelling; `os.environ/NAME` is LiteLLM's, so that a LiteLLM config loads as it is.
ENV_PREFIXES = ("env:", "os.environ/")


def _from_environment(value: Any, info: ValidationInfo) -> Any:
    env: Mapping[str, str] | None = (info.context or {}).get("env")
    if env is None or not isinstance(value, str) or not value.startswith(ENV_PREFIXES):
        return value
    prefix = next(p for p in ENV_PREFIXES if value.startswith(p))
    name = value[len(prefix) :].strip()
    if not env.get(name):
        raise PydanticCustomError(
            OWN + "env_unset", "refers to {spelled}, which is not set", {"spelled": prefix + name}
        )
    return env[name]


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PydanticCustomError(
            OWN + "regex",
            "{value} is not a regular expression ({reason})",
            {"value": shown_value(pattern), "reason": str(exc)},
        ) from None
    return pattern


# A value written `env:NAME` (or `os.environ/NAME`) is read from the environment when the file is loaded:
# secrets never sit in it.
EnvStr = Annotated[str, BeforeValidator(_from_environment)]

# The database URL schemes the gateway has a driver for (`+driver` suffixes are accepted and replaced).
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
SUPPORTED_DATABASES = "sqlite:///FILE or postgresql://USER@HOST:PORT/DB"


def database_url_problem(url: str) -> str | None:
    """What is wrong with a database URL in itself (None: nothing), said for the user who wrote it."""
    scheme, _, rest = url.partition("://")
    if not rest:
        return f"not a URL: write {SUPPORTED_DATABASES}"
    if scheme.split("+", 1)[0].lower() not in DATABASE_SCHEMES:
        return f"the scheme {scheme!r} is not supported: write {SUPPORTED_DATABASES}"
    return None


def _database_url(url: str) -> str:
    problem = database_url_problem(url)
    if problem is not None:
        # The URL itself is not repeated beyond its scheme: it may carry a password.
        raise PydanticCustomError(OWN + "database_url", "{problem}", {"problem": problem})
    return url


DatabaseUrl = Annotated[EnvStr, AfterValidator(_database_url)]
Tier = Annotated[str, OneOf(TIERS)]
Regex = Annotated[str, AfterValidator(_compiles)]
NonEmpty = Annotated[str, Field(min_length=1)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Similarity = Annotated[float, Field(ge=-1.0, le=1.0)]
Positive = Annotated[int, Field(ge=1)]
PositiveSeconds = Annotated[float, Field(ge=0.001)]


@cache
def adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def validate(kind: type[T], data: Any, *, where: str = "", env: Mapping[str, str] | None = None) -> T:
    """`data` (a parsed YAML or JSON document) as `kind`; raises ConfigError naming the first bad field.

    `where` is the path of `data` in the whole config (`cache` for a tenant's override from the admin API);
    `env` resolves `env:NAME` values (None: they are kept as written).
    """
    try:
        payload = orjson.dumps(_written(data), option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ConfigError(f"{where or 'the config'}: not JSON-like data ({exc})", where or None) from None
    try:
        return adapter(cast(type, kind)).validate_json(payload, context={"env": env})  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise from_validation_error(exc, schema(cast(type, kind)), where) from None


def _written(data: Any) -> Any:
    """`data` without the keys written `null` (or with nothing after them): they mean "not written"."""
    if isinstance(data, dict):
        return {key: _written(value) for key, value in data.items() if value is not None}
    if isinstance(data, list):
        return [_written(item) for item in data]
    return data


@cache
def schema(kind: Any) -> dict[str, Any]:
    """The JSON Schema of `kind` as a file is validated against it."""
    return adapter(kind).json_schema(mode="validation")
