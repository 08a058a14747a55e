"""Request building: messages, parameter routing, google's double nesting, media inlining, request keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import openai
import pytest

from client.config import ClientConfig, Target
from client.errors import BadRequest, MediaError, UnknownSchema, is_retryable
from client.requests import build_request, estimate_tokens
from schemas.records import InputRecord
from schemas.registry import resolve_schema

VERTEX = Target.managed(project="p")
PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"


def config(**kw: Any) -> ClientConfig:
    return ClientConfig(**{"target": VERTEX, "model": "google/gemini-2.5-flash", **kw})


def rec(**kw: Any) -> InputRecord:
    return InputRecord.model_validate({"id": "r1", "prompt": "Say hi", **kw})


def image_message(value: Any) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                        {"type": "image_url", "image_url": value}]}


# ------------------------------------------------------------------------------------------ messages & params

def test_prompt_and_system() -> None:
    assert build_request(rec(), config()).messages == [{"role": "user", "content": "Say hi"}]
    assert build_request(rec(), config(system="Be brief.")).messages[0] == {"role": "system", "content": "Be brief."}
    assert build_request(rec(system="Mine."), config(system="Default.")).messages[0]["content"] == "Mine."


def test_messages_record_with_system() -> None:
    messages = [{"role": "user", "content": "hi"}]
    request = build_request(InputRecord(messages=messages, system="S"), config(system="ignored for messages"))
    assert request.messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    with pytest.raises(BadRequest):
        build_request(InputRecord(messages=[{"role": "system", "content": "a"}, *messages], system="S"), config())


def test_params_route_to_kwargs_or_extra_body_and_override_defaults() -> None:
    request = build_request(rec(params={"temperature": 0.2, "top_k": 5, "seed": 7}),
                            config(params={"temperature": 1.0, "max_tokens": 100}))
    assert request.kwargs == {"temperature": 0.2, "max_tokens": 100, "seed": 7}
    assert request.extra_body == {"top_k": 5}


def test_model_override_and_omitted_model() -> None:
    assert build_request(rec(model="google/gemini-2.0-flash-001"), config()).model == "google/gemini-2.0-flash-001"
    request = build_request(rec(), config(model=None))
    assert request.model is None and request.create_args()["model"] is openai.omit


def test_google_is_double_nested_and_merged() -> None:
    request = build_request(
        rec(google={"thinking_config": {"include_thoughts": True}, "thought_tag_marker": "think"}),
        config(google={"thinking_config": {"thinking_budget": 1024}, "safety_settings": []}))
    assert request.extra_body == {"extra_body": {"google": {
        "thinking_config": {"thinking_budget": 1024, "include_thoughts": True},
        "safety_settings": [], "thought_tag_marker": "think"}}}
    assert request.thought_marker == "think"
    assert request.create_args()["extra_body"] == request.extra_body


def test_no_google_means_no_extra_body() -> None:
    assert "extra_body" not in build_request(rec(), config()).create_args()


def test_google_is_sent_to_openai_targets_only_when_given() -> None:
    target = Target.openai_compatible("http://localhost:8080/v1")
    assert build_request(rec(), config(target=target)).extra_body == {}
    request = build_request(rec(google={"thought_tag_marker": "think"}), config(target=target))
    assert request.extra_body == {"extra_body": {"google": {"thought_tag_marker": "think"}}}


def test_reasoning_effort_with_thinking_config_is_refused_before_sending() -> None:
    with pytest.raises(BadRequest, match="reasoning_effort") as info:
        build_request(rec(params={"reasoning_effort": "low"}),
                      config(google={"thinking_config": {"thinking_budget": 0}}))
    assert info.value.error_type == "bad_request" and not is_retryable(info.value)


def test_reserved_params_are_refused() -> None:
    with pytest.raises(BadRequest, match="stream"):
        build_request(rec(params={"stream": True}), config())


def test_schema_sets_response_format() -> None:
    request = build_request(rec(schema="CalendarEvent"), config())
    assert request.schema is resolve_schema("CalendarEvent")
    assert request.kwargs["response_format"] == request.schema.response_format()
    with pytest.raises(UnknownSchema) as info:
        build_request(rec(schema="NoSuchSchema"), config())
    assert (info.value.error_type, info.value.stage) == ("unknown_schema", "request")


# ------------------------------------------------------------------------------------------ media

@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "cat.png").write_bytes(PNG)
    (root / "clip.mp3").write_bytes(b"ID3audio")
    (tmp_path / "secret.png").write_bytes(b"outside")
    return root


def inlined_url(request) -> str:
    part = request.messages[0]["content"][1]["image_url"]
    return part["url"] if isinstance(part, dict) else part


@pytest.mark.parametrize("spec", ["cat.png", "sub/../cat.png", "{root}/cat.png", "file://{root}/cat.png"])
def test_local_images_under_media_root_are_inlined(media: Path, spec: str) -> None:
    spec = spec.format(root=media)
    request = build_request(InputRecord(messages=[image_message(spec)]), config(media_root=str(media)))
    assert inlined_url(request) == "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_url_object_form_and_extra_content_are_kept(media: Path) -> None:
    value = {"url": "cat.png", "detail": "low"}
    message = image_message(value)
    message["content"][1]["extra_content"] = {"google": {"thought_signature": "sig"}}
    record = InputRecord(messages=[message])
    request = build_request(record, config(media_root=str(media)))
    part = request.messages[0]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,") and part["image_url"]["detail"] == "low"
    assert part["extra_content"] == {"google": {"thought_signature": "sig"}}
    assert record.messages[0]["content"][1]["image_url"] == {"url": "cat.png", "detail": "low"}  # not mutated


@pytest.mark.parametrize("url", ["gs://bucket/x.jpg", "https://example.com/x.png", "data:image/png;base64,AAAA"])
def test_remote_and_data_urls_pass_untouched(media: Path, url: str) -> None:
    request = build_request(InputRecord(messages=[image_message(url)]), config(media_root=str(media)))
    assert inlined_url(request) == url


def test_audio_is_inlined_per_target_kind(media: Path) -> None:
    def audio_record() -> InputRecord:
        return InputRecord(messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"format": "audio/mp3", "data": "clip.mp3"}}]}])

    encoded = base64.b64encode(b"ID3audio").decode()
    vertex = build_request(audio_record(), config(media_root=str(media)))
    assert vertex.messages[0]["content"][0]["input_audio"]["data"] == f"data:audio/mp3;base64,{encoded}"
    plain = build_request(audio_record(), config(media_root=str(media),
                                                 target=Target.openai_compatible("http://x/v1")))
    assert plain.messages[0]["content"][0]["input_audio"]["data"] == encoded


def test_media_refusals(media: Path, tmp_path: Path) -> None:
    (media / "link_out.png").symlink_to(tmp_path / "secret.png")
    (media / "big.png").write_bytes(b"x" * 101)
    cfg = config(media_root=str(media), max_media_bytes=100)
    for spec, why in [("../secret.png", "outside"), (str(tmp_path / "secret.png"), "outside"),
                      ("link_out.png", "outside"), ("nope.png", "does not exist"), ("sub", "not a regular"),
                      ("big.png", "larger than")]:
        with pytest.raises(MediaError, match=why) as info:
            build_request(InputRecord(messages=[image_message(spec)]), cfg)
        assert info.value.error_type == "media_error" and not is_retryable(info.value)
    with pytest.raises(MediaError, match="media_root"):
        build_request(InputRecord(messages=[image_message("cat.png")]), config())


def test_symlink_that_stays_inside_is_fine(media: Path) -> None:
    (media / "sub" / "alias.png").symlink_to(media / "cat.png")
    request = build_request(InputRecord(messages=[image_message("sub/alias.png")]), config(media_root=str(media)))
    assert inlined_url(request).startswith("data:image/png;base64,")


def test_media_root_itself_may_be_a_symlink(media: Path, tmp_path: Path) -> None:
    link = tmp_path / "media_link"
    os.symlink(media, link)
    request = build_request(InputRecord(messages=[image_message("cat.png")]), config(media_root=str(link)))
    assert inlined_url(request).startswith("data:image/png;base64,")


# ------------------------------------------------------------------------------------------ identity & estimate

def test_request_key_is_stable_and_ignores_id_and_metadata() -> None:
    a = build_request(rec(id="a", metadata={"row": 1}, params={"temperature": 0, "seed": 1}), config())
    b = build_request(rec(id="b", metadata={"row": 2}, params={"seed": 1, "temperature": 0}), config())
    assert a.request_key == b.request_key
    assert len(a.request_key) == 32 and int(a.request_key, 16) >= 0


@pytest.mark.parametrize("change", [
    {"prompt": "Say hello"}, {"model": "google/other"}, {"params": {"temperature": 0.5}},
    {"schema": "CalendarEvent"}, {"google": {"thought_tag_marker": "think"}}, {"system": "Be brief."},
    {"params": {"top_k": 3}},
])
def test_request_key_changes_with_the_work(change: dict[str, Any]) -> None:
    assert build_request(rec(**change), config()).request_key != build_request(rec(), config()).request_key


def test_how_a_schema_is_asked_is_part_of_the_request_key() -> None:
    """The response cache and --resume match by request_key: an answer asked as ``response_format`` is never
    served to a run that asks the same schema as a forced function call (--structured_output tool), or back."""
    as_format = build_request(rec(schema="CalendarEvent"), config())
    as_tool = build_request(rec(schema="CalendarEvent"), config(structured_output="tool"))
    assert "response_format" in as_format.kwargs and "tools" in as_tool.kwargs
    assert as_format.request_key != as_tool.request_key
    assert build_request(rec(schema="CalendarEvent"), config(structured_output="tool")).request_key == \
        as_tool.request_key


def test_estimate_tokens() -> None:
    short = estimate_tokens([{"role": "user", "content": "Hello, world!"}])
    assert short == 3 + 4 + 4  # request + message overhead + 4 text tokens (Hello , world !)
    long = estimate_tokens([{"role": "user", "content": "Hello, world! " * 100}])
    assert long > short * 30
    uri = estimate_tokens([image_message("gs://b/x.png")])
    inline = estimate_tokens([image_message("data:image/png;base64," + "A" * 40_000)])  # 30 kB decoded
    assert inline - uri == 300 - 258
    with_schema = estimate_tokens([{"role": "user", "content": "x"}], resolve_schema("CalendarEvent"))
    assert with_schema > estimate_tokens([{"role": "user", "content": "x"}]) + 10
    assert build_request(rec(), config()).est_prompt_tokens == estimate_tokens([{"role": "user", "content": "Say hi"}])
