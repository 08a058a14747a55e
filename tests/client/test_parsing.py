"""Response parsing: thought tags (incremental), stream assembly, finish reasons, usage, structured output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from client.errors import ContentFiltered, EmptyResponse, MalformedResponse, SchemaInvalid, Truncated
from client.parsing import StreamAssembler, ThoughtTagSplitter, parse_completion, split_thoughts
from schemas.registry import resolve_schema
from tests.client._support import chunk, completion

EVENT = {"name": "Standup", "date": "2024-05-01", "participants": ["Ana", "Bo"]}


def parse(body: dict[str, Any], **kw: Any):
    return parse_completion(ChatCompletion.construct(**body), **kw)  # like the SDK: no validation


# ------------------------------------------------------------------------------------------ thought tags

@pytest.mark.parametrize(("text", "expected"), [
    ("<think>2+2 is 4</think>The answer is 4.", ("The answer is 4.", "2+2 is 4")),
    ("plain answer", ("plain answer", None)),
    ("a <thinker> is not a tag", ("a <thinker> is not a tag", None)),
    ("<think>one</think>A<think>two</think>B", ("AB", "onetwo")),
    ("Answer<think>cut off mid-thought", ("Answer", "cut off mid-thought")),
    ("x < y and </think> stays", ("x < y and </think> stays", None)),
])
def test_split_thoughts(text: str, expected: tuple[str, str | None]) -> None:
    assert split_thoughts(text, "think") == expected


def test_no_marker_means_no_splitting() -> None:
    assert split_thoughts("<think>a</think>b", None) == ("<think>a</think>b", None)
    assert split_thoughts("<thought>a</thought>b", "thought") == ("b", "a")


def test_tag_split_across_chunks() -> None:
    splitter = ThoughtTagSplitter("think")
    pieces = [splitter.feed(c) for c in ["<thi", "nk>hm", "m</th", "ink>Hi", " there<", "/p>"]] + [splitter.finish()]
    assert "".join(a for a, _ in pieces) == "Hi there</p>"
    assert "".join(t for _, t in pieces) == "hmm"


_ALPHABET = st.sampled_from(list("ab <>/thinkTHINK\n"))
_SEGMENT = st.one_of(st.text(_ALPHABET, max_size=12), st.sampled_from(["<think>", "</think>", "<thi", "</"]))


@given(segments=st.lists(_SEGMENT, max_size=12), cuts=st.lists(st.integers(min_value=0, max_value=200)))
def test_any_chunking_gives_the_same_split(segments: list[str], cuts: list[int]) -> None:
    text = "".join(segments)
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    chunks = [text[a:b] for a, b in zip(points, points[1:])]
    splitter = ThoughtTagSplitter("think")
    outs = [splitter.feed(c) for c in chunks] + [splitter.finish()]
    answer, thoughts = "".join(a for a, _ in outs), "".join(t for _, t in outs)
    whole_answer, whole_thoughts = split_thoughts(text, "think")
    assert answer == whole_answer
    assert thoughts == (whole_thoughts or "")
    # Nothing but the tags themselves is lost.
    assert len(answer) + len(thoughts) == len(text) - _tag_chars(text)


def _tag_chars(text: str) -> int:
    """Characters consumed as tags by a straightforward reference scan."""
    removed, i, inside = 0, 0, False
    while True:
        tag = "</think>" if inside else "<think>"
        j = text.find(tag, i)
        if j < 0:
            return removed
        removed += len(tag)
        i, inside = j + len(tag), not inside


# ------------------------------------------------------------------------------------------ stream assembly

def chunks(*bodies: dict[str, Any]) -> list[ChatCompletionChunk]:
    return [ChatCompletionChunk.model_validate(b) for b in bodies]


def test_stream_assembler_keeps_the_last_usage_and_each_choice() -> None:
    usage1 = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    usage2 = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
              "completion_tokens_details": {"reasoning_tokens": 2}}
    assembler = StreamAssembler()
    for c in chunks(chunk("Hel"), chunk("Other", index=1), chunk("lo", usage=usage1),
                    chunk(finish="stop"), chunk(finish="stop", index=1), chunk(choices=False, usage=usage2)):
        assembler.feed(c)
    assert assembler.finished
    result = parse_completion(assembler.completion())
    assert (result.content, result.alternatives, result.finish_reason) == ("Hello", ["Other"], "stop")
    assert result.usage.total_tokens == 8 and result.usage.reasoning_tokens == 2  # the last, not a sum
    assert result.model == "google/gemini-test"


def test_stream_without_finish_reason_is_not_finished() -> None:
    assembler = StreamAssembler()
    for c in chunks(chunk("partial")):
        assembler.feed(c)
    assert not assembler.finished


def test_stream_reasoning_content_becomes_thoughts() -> None:
    body = chunk(finish="stop")
    body["choices"][0]["delta"] = {"reasoning_content": "let me see", "content": "42"}
    assembler = StreamAssembler()
    assembler.feed(ChatCompletionChunk.model_validate(body))
    assert (parse_completion(assembler.completion()).thoughts) == "let me see"


# ------------------------------------------------------------------------------------------ parse_completion

def test_usage_details() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
             "completion_tokens_details": {"reasoning_tokens": 30},
             "prompt_tokens_details": {"cached_tokens": 64}}
    result = parse(completion("ok", usage=usage))
    assert result.usage.model_dump() == {"prompt_tokens": 100, "completion_tokens": 40, "reasoning_tokens": 30,
                                         "cached_tokens": 64, "total_tokens": 140}


def test_thoughts_are_split_and_trimmed() -> None:
    result = parse(completion("<think>\nfirst I add\n</think>\n\nFour."), thought_marker="think")
    assert (result.content, result.thoughts) == ("Four.", "first I add")


@pytest.mark.parametrize("schema", [None, "CalendarEvent"])
def test_length_is_truncated_before_parsing(schema: str | None) -> None:
    with pytest.raises(Truncated, match="max_tokens"):
        parse(completion('{"name": "Stand', finish="length"), schema=resolve_schema(schema) if schema else None)


@pytest.mark.parametrize("finish", ["content_filter", "SAFETY"])
def test_filtered_output(finish: str) -> None:
    with pytest.raises(ContentFiltered):
        parse(completion("", finish=finish), schema=resolve_schema("CalendarEvent"))


def test_refusal_is_content_filtered() -> None:
    body = completion(None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    with pytest.raises(ContentFiltered, match="can't help"):
        parse(body)


def test_empty_text_is_a_result_without_schema_and_an_error_with_one() -> None:
    assert parse(completion("")).content == ""
    assert parse(completion(None)).content == ""
    with pytest.raises(EmptyResponse):
        parse(completion("  "), schema=resolve_schema("CalendarEvent"))


def test_structured_output_is_validated() -> None:
    result = parse(completion(json.dumps(EVENT)), schema=resolve_schema("CalendarEvent"))
    assert result.parsed == EVENT


@pytest.mark.parametrize("wrap", ["```json\n{}\n```", "```\n{}\n```", "  ```json\n{}```  "])
def test_fenced_json_is_tolerated(wrap: str) -> None:
    text = wrap.replace("{}", json.dumps(EVENT))
    assert parse(completion(text), schema=resolve_schema("CalendarEvent")).parsed == EVENT


def test_thought_tags_are_stripped_before_json() -> None:
    text = "<think>the user wants JSON {not json</think>" + json.dumps(EVENT)
    result = parse(completion(text), schema=resolve_schema("CalendarEvent"), thought_marker="think")
    assert result.parsed == EVENT and "not json" in result.thoughts


@pytest.mark.parametrize("text", ['{"name": "x"}', "not json at all", '{"name": 1, "date": "d", "participants": []}'])
def test_schema_mismatch_carries_the_answer(text: str) -> None:
    with pytest.raises(SchemaInvalid) as info:
        parse(completion(text), schema=resolve_schema("CalendarEvent"))
    assert info.value.response_text == text
    assert info.value.error_type == "schema_validation" and info.value.stage == "validate"


def test_no_choices_is_malformed() -> None:
    body = completion("x")
    body["choices"] = []
    with pytest.raises(MalformedResponse):
        parse(body)


def test_alternatives_are_the_other_choices() -> None:
    result = parse(completion("first", extra_choices=["second", "<think>t</think>third"]), thought_marker="think")
    assert result.content == "first" and result.alternatives == ["second", "third"]
