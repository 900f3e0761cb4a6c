"""Keep secrets out of what we publish: data cards, their JSON twin, HTML pages.

Blends never hold a secret by design (the OpenAI backend names the *environment variable*
holding its key), so this is defence in depth against a key pasted into a URL, a config
value or a generated text. Three passes:

1. config values under a secret-looking key (`api_key`, `token`, `password`, ...) are
   replaced, unless the value is an environment-variable *name* such as `OPENAI_API_KEY`;
2. strings shaped like well-known credentials (`sk-...`, `hf_...`, `ghp_...`, `AKIA...`,
   `Bearer ...`, `user:password@` in a URL) are replaced wherever they occur;
3. the literal values of secret-looking environment variables are replaced wherever they
   occur, so a key that matches no known shape still never leaves the process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***redacted***"

# A name is secret-looking when it *ends* with one of these words: `hf_token`, `OPENAI_API_KEY`,
# `client_secret`; not `max_tokens`, `tokenizer` or `api_key_env` (which names a variable).
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|secret|token"
    r"|passw(or)?d|credentials?|authorization)$",
    re.IGNORECASE,
)
_ENV_VAR_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# (pattern, replacement): a group 1 in the pattern is kept, the rest is replaced.
_SECRET_SHAPES = [
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED),  # OpenAI and compatible servers
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED),  # Hugging Face
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),  # GitHub
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),  # AWS access key id
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"), REDACTED),  # Slack
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-]{12,}"), rf"\1{REDACTED}"),
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),  # user:password@host
    (
        re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|sig)=)[^&\s#]+"),
        rf"\1{REDACTED}",
    ),
]
# Environment values shorter than this are too likely to occur by chance in real text.
_MIN_ENV_SECRET_CHARS = 8


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look secret, longest first."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if is_secret_key(name) and len(value) >= _MIN_ENV_SECRET_CHARS
    }
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    """Replace credential-shaped substrings and known secret values in `text`."""
    for secret in env_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for shape, replacement in _SECRET_SHAPES:
        text = shape.sub(replacement, text)
    return text


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like value with secrets replaced (see the module docstring)."""
    found = env_secrets() if secrets is None else secrets
    return _redact(value, found)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        cleaned: dict[Any, Any] = {}
        for key, item in value.items():
            if (
                isinstance(key, str)
                and is_secret_key(key)
                and isinstance(item, str)
                and item
                and not _ENV_VAR_NAME.match(item)
            ):
                cleaned[key] = REDACTED
            else:
                cleaned[key] = _redact(item, secrets)
        return cleaned
    if isinstance(value, list | tuple):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value
