"""The official openai SDK against each of the emulator's three base URLs."""

from __future__ import annotations

import base64
import datetime as dt
from enum import Enum
from typing import Literal, Optional

import openai
import pydantic
import pytest

from tests.emulator._support import DEPLOYED, MANAGED, MODEL, PLAIN

BASES = {"managed": MANAGED, "deployed": DEPLOYED, "plain": PLAIN}
THINK = {"extra_body": {"google": {"thinking_config": {"include_thoughts": True}, "thought_tag_marker": "think"}}}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(params=sorted(BASES))
def client(request: pytest.FixtureRequest, emu) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.url + BASES[request.param], api_key="test-token", max_retries=0, timeout=10)


def ask(client: openai.OpenAI, content, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def test_non_streaming_answer_quotes_the_prompt_and_counts_tokens(client):
    first = ask(client, "What is the capital of France?")
    again = ask(client, "What is the capital of France?")
    other = ask(client, "Name three rivers in Spain")

    msg = first.choices[0].message.content
    assert "capital of France" in msg
    assert first.choices[0].finish_reason == "stop"
    assert first.model == MODEL and first.object == "chat.completion"
    assert msg == again.choices[0].message.content  # deterministic for one body
    assert "rivers in Spain" in other.choices[0].message.content and other.choices[0].message.content != msg
    u = first.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_streaming_with_usage_matches_the_non_streaming_answer(client):
    whole = ask(client, "Tell me about the Loire valley").choices[0].message.content
    chunks = list(ask(client, "Tell me about the Loire valley", stream=True, stream_options={"include_usage": True}))

    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 2
    assert "".join(c.choices[0].delta.content for c in content_chunks) == whole
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0
    assert usage_chunk.usage.total_tokens == usage_chunk.usage.prompt_tokens + usage_chunk.usage.completion_tokens


def test_gs_image_is_acknowledged_and_billed(client):
    text_only = ask(client, [{"type": "text", "text": "Describe this picture"}])
    with_image = ask(client, [
        {"type": "text", "text": "Describe this picture"},
        {"type": "image_url", "image_url": {"url": "gs://bucket/x.jpg"}},
    ])
    bare = ask(client, [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": "gs://bucket/y.png"}])

    assert "[gs://bucket/x.jpg]" in with_image.choices[0].message.content
    assert "[gs://bucket/y.png]" in bare.choices[0].message.content
    assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens == 258


def test_data_url_image_is_decoded_and_billed_by_size(client):
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    answer = ask(client, [{"type": "text", "text": "What is in the image?"}, {"type": "image_url", "image_url": {"url": url}}])
    plain = ask(client, [{"type": "text", "text": "What is in the image?"}])

    assert f"[image/png {len(PNG)} bytes]" in answer.choices[0].message.content
    assert answer.usage.prompt_tokens - plain.usage.prompt_tokens == -(-len(PNG) // 100)


def test_input_audio_by_uri_and_by_raw_base64(client):
    by_uri = ask(client, [{"type": "text", "text": "Transcribe"},
                          {"type": "input_audio", "input_audio": {"format": "audio/mp3", "data": "gs://bucket/a.mp3"}}])
    raw = base64.b64encode(b"ID3" + bytes(500)).decode()
    by_data = ask(client, [{"type": "text", "text": "Transcribe"},
                           {"type": "input_audio", "input_audio": {"format": "wav", "data": raw}}])

    assert "[gs://bucket/a.mp3]" in by_uri.choices[0].message.content
    assert "[audio/wav 503 bytes]" in by_data.choices[0].message.content


class Colour(str, Enum):
    red = "red"
    blue = "blue"


class Address(pydantic.BaseModel):
    city: str
    zip_code: Optional[str] = None


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=40)
    age: int = pydantic.Field(ge=0, le=130)
    score: float = pydantic.Field(gt=0, lt=1)
    tags: list[str] = pydantic.Field(min_length=1, max_length=3)
    kind: Literal["customer", "supplier"]
    colour: Colour
    born: dt.date
    address: Address
    previous: Optional[Address] = None
    active: bool


def test_parse_returns_a_valid_pydantic_object(client):
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Extract the person: Ada Lovelace, mathematician, London"}],
        response_format=Person,
    )
    person = completion.choices[0].message.parsed

    assert isinstance(person, Person)
    assert 1 <= len(person.tags) <= 3 and 0 < person.score < 1
    words = {"Extract", "the", "person", "Ada", "Lovelace", "mathematician", "London"}
    assert set(person.name.split()) <= words  # strings come from the prompt's words


def test_thinking_with_a_tag_marker_puts_the_thought_in_the_content(client):
    answer = ask(client, "Why is the sky blue?", extra_body=THINK)
    content = answer.choices[0].message.content

    assert content.startswith("<think>")
    thought, _, rest = content[len("<think>"):].partition("</think>")
    assert thought and thought not in rest and "Why is the sky blue" in rest
    reasoning = answer.usage.completion_tokens_details.reasoning_tokens
    assert reasoning > 0 and answer.usage.completion_tokens > reasoning
