"""Small misbehaving OpenAI-compatible servers for the reliability tests: stdlib only, 127.0.0.1, port 0, bounded.

    with misbehaving(trickle_body(gap_s=0.2)) as server:      # server.url == "http://127.0.0.1:PORT/v1"
        run([... "--base_url", server.url, "--model", "m"])
        server.requests, server.bytes_sent

A behaviour is ``f(handler, body) -> None`` writing one answer with the stdlib ``BaseHTTPRequestHandler``. Every
loop that could run forever stops when the server closes (``handler.server.stopping``) or after ``MAX_S``; a
client that goes away ends it too (BrokenPipe). Closing the server waits for nothing it cannot bound.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

MAX_S = 120.0  # no handler runs longer than this, whatever the test does

Behaviour = Callable[[BaseHTTPRequestHandler, dict], None]


def completion(content: str, model: str = "m") -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def chunk(content: str) -> bytes:
    body = {"id": "s1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_sent = 0
        self.auth_headers: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def live(self, started: float) -> bool:
        return not self.stopping.is_set() and time.monotonic() - started < MAX_S


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        with self.server.lock:
            self.server.requests += 1
            self.server.auth_headers.append(self.headers.get("authorization", ""))
        try:
            self.server.behaviour(self, body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client gave up: that is what these servers test
        self.close_connection = True

    def send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        with self.server.lock:
            self.server.bytes_sent += len(data)


@contextlib.contextmanager
def misbehaving(behaviour: Behaviour) -> Iterator[_Server]:
    server = _Server(behaviour)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


# ---------------------------------------------------------------------------------------------- behaviours

def _headers(h: BaseHTTPRequestHandler, status: int = 200, ctype: str = "application/json", **extra: str) -> None:
    h.send_response(status)
    h.send_header("content-type", ctype)
    for name, value in extra.items():
        h.send_header(name.replace("_", "-"), value)
    h.send_header("connection", "close")
    h.end_headers()


def trickle_body(gap_s: float = 0.1) -> Behaviour:
    """A valid completion sent one byte every ``gap_s`` seconds (a 1 KB body takes minutes)."""

    def behaviour(h: BaseHTTPRequestHandler, body: dict) -> None:
        data = json.dumps(completion("x" * 1000)).encode()
        _headers(h, content_length=str(len(data)))
        started = time.monotonic()
        for i in range(len(data)):
            if not h.server.live(started):
                return
            h.send(data[i:i + 1])
            time.sleep(gap_s)

    return behaviour


def endless_stream(gap_s: float = 0.05) -> Behaviour:
    """An SSE stream of content chunks that never sends a finish_reason or [DONE]."""

    def behaviour(h: BaseHTTPRequestHandler, body: dict) -> None:
        _headers(h, ctype="text/event-stream", transfer_encoding="chunked")
        started = time.monotonic()
        while h.server.live(started):
            data = chunk("more ")
            h.send(b"%x\r\n%s\r\n" % (len(data), data))
            time.sleep(gap_s)

    return behaviour


def endless_chunked(gap_s: float = 0.05) -> Behaviour:
    """A chunked JSON body that never ends (whitespace after an opening brace)."""

    def behaviour(h: BaseHTTPRequestHandler, body: dict) -> None:
        _headers(h, transfer_encoding="chunked")
        h.send(b"1\r\n{\r\n")
        started = time.monotonic()
        while h.server.live(started):
            h.send(b"40\r\n" + b" " * 64 + b"\r\n")
            time.sleep(gap_s)

    return behaviour


def always(status: int, message: str = "denied") -> Behaviour:
    """Every request answered ``status`` with an OpenAI-style error body."""

    def behaviour(h: BaseHTTPRequestHandler, body: dict) -> None:
        data = json.dumps({"error": {"message": message, "type": "error", "code": status}}).encode()
        _headers(h, status, content_length=str(len(data)))
        h.send(data)

    return behaviour


def huge_answer(size: int, piece: int = 64 * 1024) -> Behaviour:
    """A ``size``-byte answer, generated as it is sent (never held by the server): an SSE stream when the request
    asks for one, else one JSON body."""

    def behaviour(h: BaseHTTPRequestHandler, body: dict) -> None:
        started = time.monotonic()
        if body.get("stream"):
            _headers(h, ctype="text/event-stream", transfer_encoding="chunked")
            sent = 0
            while sent < size and h.server.live(started):
                data = chunk("y" * piece)
                h.send(b"%x\r\n%s\r\n" % (len(data), data))
                sent += len(data)
            h.send(b"0\r\n\r\n")
            return
        head, tail = json.dumps(completion("\x00")).encode().split(b"\\u0000")
        _headers(h, content_length=str(len(head) + size + len(tail)))
        h.send(head)
        sent = 0
        while sent < size and h.server.live(started):
            n = min(piece, size - sent)
            h.send(b"y" * n)
            sent += n
        h.send(tail)

    return behaviour


def echo_auth(as_json_field: bool = False) -> Behaviour:
    """A 200 answer whose content repeats the request's Authorization header (a debugging proxy gone wrong)."""

    def behaviour(h: BaseHTTPRequestHandler, body: dict) -> None:
        auth = h.headers.get("authorization", "")
        content = json.dumps({"name": auth, "date": auth}) if as_json_field else f"you sent: {auth}"
        data = json.dumps(completion(content)).encode()
        _headers(h, content_length=str(len(data)))
        h.send(data)

    return behaviour
