"""Message content: text parts and media parts (image_url, input_audio), acknowledged and billed.

``image_url`` may be a bare string (Google's samples) or ``{"url": ...}``; URLs are ``gs://``,
``http(s)://`` or ``data:<mime>;base64,...`` (decoded: bad base64 is a 400).  ``input_audio.data``
may also be raw base64.  Each media part adds an acknowledgement such as ``[image/png 1234 bytes]``
or ``[gs://bucket/x.jpg]`` to ``req.acks`` and its tokens to ``req.prompt_tokens``.

Usage::

    texts: list[str] = []
    text = parse_content(req, [{"type": "text", "text": "Describe"},
                               {"type": "image_url", "image_url": "gs://b/x.jpg"}], 0, texts)
    req.acks   # ['[gs://b/x.jpg]']
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from emulator import tokens
from emulator.errors import invalid_argument

if TYPE_CHECKING:
    from emulator.request import ChatRequest

__all__ = ["parse_content", "media"]

_DATA_URL = re.compile(r"data:([^;,]*)((?:;[^;,]*)*),", re.S)


def _decode(data: str, what: str) -> int:
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise invalid_argument(f"Invalid base64 data in {what}.") from None


def media(url: Any, what: str, default_mime: str | None = None) -> tuple[str, int]:
    """(acknowledgement, prompt tokens) for a media reference."""
    if not isinstance(url, str) or not url:
        raise invalid_argument(f"{what} must be a non-empty string.")
    if url.startswith(("gs://", "https://", "http://")):
        return f"[{url}]", tokens.MEDIA_URI_TOKENS
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if not match or ";base64" not in match.group(2):
            raise invalid_argument(f"{what}: only base64 data URLs are supported.")
        mime = match.group(1) or "application/octet-stream"
        n_bytes = _decode(url[match.end():], what)
        return f"[{mime} {n_bytes} bytes]", tokens.inline_media_tokens(n_bytes)
    if default_mime is None:
        raise invalid_argument(f"{what}: unsupported URL (use gs://, https:// or a data: URL).")
    n_bytes = _decode(url, what)  # input_audio may carry raw base64
    return f"[{default_mime} {n_bytes} bytes]", tokens.inline_media_tokens(n_bytes)


def parse_content(req: "ChatRequest", content: Any, i: int, texts: list[str]) -> str:
    """Collect a message's text (returned) and media acknowledgements; count media tokens."""
    if isinstance(content, str):
        texts.append(content)
        return content
    if not isinstance(content, list):
        raise invalid_argument(f"messages[{i}].content must be a string or a list of parts.")
    own: list[str] = []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        if not isinstance(part, dict):
            raise invalid_argument(f"{where} must be an object.")
        if "extra_content" in part:
            req.extra_content[1] += 1
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid_argument(f"{where}.text must be a string.")
            own.append(part["text"])
            continue
        if kind == "image_url":
            image = part.get("image_url")
            ack, cost = media(image.get("url") if isinstance(image, dict) else image, f"{where}.image_url")
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict):
                raise invalid_argument(f"{where}.input_audio must be an object with 'data' and 'format'.")
            fmt = audio.get("format") if isinstance(audio.get("format"), str) else "audio/wav"
            ack, cost = media(audio.get("data"), f"{where}.input_audio.data", fmt if "/" in fmt else f"audio/{fmt}")
        else:
            raise invalid_argument(f"{where}: unsupported content part type {kind!r}.")
        req.acks.append(ack)
        req.prompt_tokens += cost
    texts.extend(own)
    return " ".join(own)
