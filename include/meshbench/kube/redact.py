"""Masking secrets in command lines and command output before they are logged or stored.

Two kinds of protection: values the caller knows are secret (a token it read, a password
it generated) are replaced wherever they appear, and arguments that look secret by name
(``--token=...``, ``--set db.password=...``, ``https://user:pass@host``) are masked even when
the caller forgot to say so.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

# Shell-safe, so a redacted command line still reads as one without quoting.
MASK = "REDACTED"

# Flag or key names whose value is a secret; matched case-insensitively inside the name.
_SECRET_NAME = re.compile(
    r"(token|password|passwd|secret|api[-_]?key|client[-_]?key|private[-_]?key|credential|auth)",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@", re.IGNORECASE)
_BEARER = re.compile(r"(?P<head>bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Keys in kubeconfig/YAML/JSON text that carry credentials inline.
_INLINE_FIELD = re.compile(
    r"(?P<head>[\"']?(?:token|client-key-data|password|id-token|refresh-token)[\"']?\s*[:=]\s*[\"']?)"
    r"[^\s\"',}]+",
    re.IGNORECASE,
)
# A secret shorter than this is not searched for in free text (it would mask random words).
_MIN_SECRET_LENGTH = 4


def _mask_values(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len)[::-1]:
        text = text.replace(secret, MASK)
    return text


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secret values, bearer tokens, URL credentials and inline
    credential fields masked."""
    text = _mask_values(text, secrets)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m.group('head')}{MASK}", text)
    return _INLINE_FIELD.sub(lambda m: f"{m.group('head')}{MASK}", text)


def redact_args(args: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """A copy of ``args`` safe to log: secret values, secret-looking flags and ``key=value``
    pairs whose key names a secret are masked."""
    secrets = list(secrets)
    redacted: list[str] = []
    mask_next = False
    for arg in args:
        if mask_next:
            redacted.append(MASK)
            mask_next = False
            continue
        if arg.startswith("-"):
            name, equals, _value = arg.partition("=")
            if _SECRET_NAME.search(name):
                if equals:
                    redacted.append(f"{name}={MASK}")
                else:
                    redacted.append(arg)
                    mask_next = True
                continue
        elif "=" in arg:
            # helm --set a.b.password=x, env-style KEY=VALUE, clusterctl variables
            key, _, _value = arg.partition("=")
            if _SECRET_NAME.search(key) and not key.startswith(("http:", "https:")):
                redacted.append(f"{key}={MASK}")
                continue
        redacted.append(redact_text(arg, secrets))
    return redacted


def format_command(args: Sequence[str], secrets: Iterable[str] = ()) -> str:
    """A shell-quoted, redacted command line for logs and plans."""
    return shlex.join(redact_args(args, secrets))
