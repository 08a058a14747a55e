"""GET /emulator/stats: counts, fingerprints, duplicates, in-flight accounting, reset."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import httpx2

from tests.emulator._support import AUTH, CHAT, DEPLOYED, MANAGED, PLAIN, user


def canonical_sha256(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_fingerprints_count_arrivals_and_ok_answers(emu, http):
    body = user("Summarise record 1")
    http.post(MANAGED + CHAT, content=json.dumps(body), headers=AUTH)
    reordered = dict(reversed(list(body.items())))  # same JSON value, other key order and spacing
    http.post(MANAGED + CHAT, content=json.dumps(reordered, indent=2), headers=AUTH)
    http.post(MANAGED + CHAT, json=user("Summarise record 2"), headers=AUTH)
    http.post(MANAGED + CHAT, json=user("Summarise record 3"), headers={})  # 401: received, not ok

    stats = emu.stats()
    assert stats["requests"] == 4 and stats["by_status"] == {"200": 3, "401": 1}
    assert stats["fingerprints"][canonical_sha256(body)] == {"received": 2, "ok": 2}
    assert stats["fingerprints"][canonical_sha256(user("Summarise record 3"))] == {"received": 1, "ok": 0}
    assert stats["unique_fingerprints"] == 3 and stats["duplicate_ok"] == 1 and stats["ok"] == 3
    assert "fingerprints" not in emu.stats(fingerprints=False)


def test_routes_and_token_totals(emu, http):
    totals = {"prompt": 0, "completion": 0, "reasoning": 0}
    bodies = [(MANAGED, user("a")), (DEPLOYED, user("b")), (PLAIN, user("c")),
              (MANAGED, user("d", extra_body={"google": {"thinking_config": {"thinking_budget": 50}}}))]
    for path, body in bodies:
        usage = http.post(path + CHAT, json=body, headers=AUTH).json()["usage"]
        totals["prompt"] += usage["prompt_tokens"]
        totals["completion"] += usage["completion_tokens"]
        totals["reasoning"] += usage.get("completion_tokens_details", {}).get("reasoning_tokens", 0)
    http.get("/v1/models")

    stats = emu.stats()
    assert stats["by_route"] == {"managed_chat": 2, "deployed_chat": 1, "openai_chat": 1, "openai_models": 1}
    assert stats["tokens"] == totals and totals["reasoning"] > 0


def test_in_flight_lasts_until_the_stream_ends(emu, http):
    emu.set_faults(latency_ms=400)
    with http.stream("POST", MANAGED + CHAT, json=user("slow stream", stream=True), headers=AUTH) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        during = emu.stats(fingerprints=False)
        list(lines)
    after = emu.stats(fingerprints=False)

    assert during["in_flight"] == 1 and during["ok"] == 0  # ok is counted once the stream completes
    assert after["in_flight"] == 0 and after["ok"] == 1 and after["max_in_flight"] == 1


def test_max_in_flight_counts_concurrent_requests(emu):
    emu.set_faults(latency_ms=1500)  # 8 threads each open a client: all of them arrive in time on a loaded machine

    def call(i: int) -> None:
        with httpx2.Client(base_url=emu.url, timeout=10) as client:
            client.post(MANAGED + CHAT, json=user(f"parallel {i}"), headers=AUTH)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = emu.stats()
    assert 6 <= stats["max_in_flight"] <= 8 and stats["in_flight"] == 0 and stats["ok"] == 8


def test_reset_clears_everything(emu, http):
    http.post(MANAGED + CHAT, json=user("x"), headers=AUTH)
    emu.reset()
    stats = emu.stats()
    assert stats["requests"] == 0 and stats["fingerprints"] == {} and stats["tokens"]["prompt"] == 0
    assert stats["max_in_flight"] == 0 and stats["by_status"] == {}
    assert emu.stats()["requests"] == 0  # the admin routes themselves are not counted


def test_reset_keeps_counting_requests_already_in_flight(emu, http):
    emu.set_faults(latency_ms=2000)  # still in flight while the test resets and reads, even on a loaded machine
    slow = threading.Thread(target=lambda: httpx2.post(emu.url + MANAGED + CHAT, json=user("slow"), headers=AUTH))
    slow.start()
    deadline = time.time() + 5
    while emu.stats(fingerprints=False)["in_flight"] == 0 and time.time() < deadline:
        time.sleep(0.01)
    emu.reset()
    during = emu.stats(fingerprints=False)
    slow.join()
    after = emu.stats(fingerprints=False)

    assert during["in_flight"] == 1 and during["max_in_flight"] == 1 and during["requests"] == 0
    assert after["in_flight"] == 0 and after["ok"] == 1


def test_pipelined_streams_on_one_connection_never_overlap(emu):
    host, port = emu.url.removeprefix("http://").split(":")
    body = json.dumps(user("pipelined", stream=True)).encode()
    request = (f"POST {MANAGED}{CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request * 5)  # five requests back to back, answered one after another
        received = b""
        while received.count(b"data: [DONE]") < 5:
            received += sock.recv(65536)

    stats = emu.stats()
    assert stats["ok"] == 5 and stats["max_in_flight"] == 1


def test_a_stream_abandoned_by_its_client_is_not_ok(emu, http):
    emu.set_faults(latency_ms=3000)  # the client leaves long before the stream could end, however loaded the box
    with http.stream("POST", MANAGED + CHAT, json=user("abandoned", stream=True), headers=AUTH) as response:
        next(line for line in response.iter_lines() if line.startswith("data: "))
    deadline = time.time() + 10
    while (stats := emu.stats(fingerprints=False))["in_flight"] and time.time() < deadline:
        time.sleep(0.02)

    assert stats["in_flight"] == 0 and stats["ok"] == 0 and stats["by_status"] == {"200": 1}
