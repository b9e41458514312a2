"""Credentials for outside parties: from the environment, or from a secrets file outside the repository.

``PORTAL_SECRETS_FILE`` names a JSON object of ``NAME: value`` (for example the file `make run` writes for the
local emulators under var/, or one a deployment mounts). It must be readable by its owner only (0600 or
stricter): a file others can read is refused rather than used. The environment wins over the file.

Values never reach the database, the logs or an exception message: callers pass them straight to the
adapters, which redact them from every record they make.
"""

from __future__ import annotations

import json
import os
import stat
from functools import lru_cache
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=1)
def _file_values(path: str) -> dict[str, str]:
    file = Path(path)
    mode = file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ImproperlyConfigured(f"{path} is readable by others: make it 0600 (chmod 600 {path}).")
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ImproperlyConfigured(f"{path} must hold a JSON object of NAME: value.")
    return {str(k): str(v) for k, v in data.items()}


def secret(name: str, default: str | None = None) -> str | None:
    """The named credential, or `default` when neither the environment nor the secrets file has it."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get("PORTAL_SECRETS_FILE")
    if path and Path(path).exists():
        return _file_values(path).get(name, default)
    return default


def reset_cache() -> None:
    """Forget the secrets file's content (tests, or after a rotation)."""
    _file_values.cache_clear()
