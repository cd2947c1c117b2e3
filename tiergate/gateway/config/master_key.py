"""The master key: which source is in force, the local key files, and the line that says so at start-up.

Precedence: `$TIERGATE_MASTER_KEY` over the config file's `master_key`, the way a deployment's environment
(a Kubernetes Secret, a CI variable) overrides the file baked into an image; the start-up line says when it
does. Without either, the embedded default keeps a key of its own in `./tiergate.master_key`. The key itself
is never logged: the line names the source and, for a long key, its first few characters.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from tiergate.gateway.config.fieldtypes import ENV_PREFIXES

MASTER_KEY_ENV = "TIERGATE_MASTER_KEY"
MASTER_KEY_FILE = "tiergate.master_key"
# Virtual keys start with `sk-tg-` and a random part; a master key made by tiergate says what it is.
MASTER_KEY_PREFIX = "sk-tg-master-"


def master_key_in_force(
    written: str | None, spelled: object, where: str, env: Mapping[str, str], field: str = "master_key"
) -> tuple[str | None, str]:
    """(the master key, where it came from) given the config's `field` (`written`, resolved; `spelled` as
    the file has it) and the environment."""
    from_env = env.get(MASTER_KEY_ENV)
    if from_env:
        if written and written != from_env:
            return from_env, f"${MASTER_KEY_ENV} (it overrides the {field} of {where})"
        return from_env, f"${MASTER_KEY_ENV}"
    if not written:
        return None, ""
    if isinstance(spelled, str) and spelled.startswith(ENV_PREFIXES):
        return written, f"the {field} of {where} ({spelled.strip()})"
    return written, f"the {field} of {where}"


def local_master_key(path: Path) -> tuple[str, bool]:
    """A master key kept in a file only its owner can read, made on first use; (key, whether it was made)."""
    try:
        return path.read_text(encoding="utf-8").strip(), False
    except FileNotFoundError:
        pass
    key = MASTER_KEY_PREFIX + secrets.token_urlsafe(24)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first
        return path.read_text(encoding="utf-8").strip(), False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    return key, True


def shown_prefix(key: str) -> str:
    """The start of a key, enough to tell two keys apart: a third of it at most, and 15 characters."""
    return key[: min(15, len(key) // 3)] + "..."


def master_key_line(key: str | None, source: str) -> str:
    """What start-up says about the master key (never the key)."""
    if not key:
        return (
            f"no master key: /admin and every master-key call answer 401 (set ${MASTER_KEY_ENV} or master_key "
            "in the config); virtual keys made with `tiergate keys create` work"
        )
    return f"master key from {source} ({shown_prefix(key)})"
