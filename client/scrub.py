"""Keep live credentials out of what chatbeam writes, even when a server echoes them back.

    out = scrub_output(out)                          # a ResultRecord / ErrorRecord with known secrets replaced
    url, auth = split_userinfo("http://u:KEY@host/v1")   # ("http://host/v1", ("u", "KEY")); KEY registered
    install_log_redaction()                          # every log record of the process is redacted as it is made

``client.errors.redact`` already cleans error messages and logs (patterns plus the registry of live secrets). Model
output is different: patterns would corrupt legitimate text (an answer that explains ``Authorization: Bearer``
headers), so only the exact live secrets (API keys read from the environment, minted access tokens, URL
passwords) are replaced, with ``[REDACTED]``, in every string a server could have filled: content, thoughts,
parsed values, alternatives, response text. The input ``record`` and ``metadata`` are the user's own and stay.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel

from client.errors import live_secrets, redact, register_secret

__all__ = ["install_log_redaction", "scrub_output", "split_userinfo"]

_KEEP = frozenset({"id", "request_key", "record", "metadata", "raw"})
_MARK = "[REDACTED]"
M = TypeVar("M", bound=BaseModel)


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, _MARK)
        return value
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, BaseModel):
        return scrub_output(value)
    return value


def _contains(value: Any, secrets: list[str]) -> bool:
    if isinstance(value, str):
        return any(secret in value for secret in secrets)
    if isinstance(value, list):
        return any(_contains(v, secrets) for v in value)
    if isinstance(value, dict):
        return any(_contains(k, secrets) or _contains(v, secrets) for k, v in value.items())
    if isinstance(value, BaseModel):
        return any(_contains(getattr(value, f), secrets) for f in type(value).model_fields)
    return False


def scrub_output(output: M) -> M:
    """``output`` with every live secret replaced in its server-filled fields (the same object when none)."""
    secrets = live_secrets()
    if not secrets:
        return output
    changes = {name: _scrub(getattr(output, name), secrets) for name in type(output).model_fields
               if name not in _KEEP and _contains(getattr(output, name), secrets)}
    return output.model_copy(update=changes) if changes else output


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """A URL without its ``user:password@`` part, and that part (registered as secrets) for HTTP Basic auth —
    which is what httpx would have sent anyway, but without the password in every request log line."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    # The password is the secret; a user name alone (``http://KEY@host``) is a key used as one.
    for secret in ((password, userinfo) if password else (user,)):
        register_secret(secret)
    return urlunsplit(parts._replace(netloc=host)), (user, password)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None


def install_log_redaction() -> None:
    """Every log record of this process is redacted as it is made (a library logging a URL or a header -- httpx
    logs every request URL at INFO -- cannot leak a live secret through any handler, including ones installed
    later, such as a progress bar's). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "chatbeam_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory.chatbeam_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
