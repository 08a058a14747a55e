"""The stream's chunk sequence matches what real servers send (OpenAI, llama-server), not just what parses."""

import json

MANAGED = "/v1/projects/p/locations/us-central1/endpoints/openapi/chat/completions"


def test_stream_opens_with_a_role_only_chunk_then_content_then_finish(http):
    body = {"model": "google/gemini-2.0-flash-001", "stream": True,
            "messages": [{"role": "user", "content": "stream shape please"}]}
    resp = http.post(MANAGED, json=body, headers={"Authorization": "Bearer t"})
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert all(set(d) == {"content"} and d["content"] for d in deltas[1:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and deltas[-1] == {}
    assert "stream shape please"[:6] in "".join(d["content"] for d in deltas[1:-1]).lower()
