"""The documented token-counting rule, and that usage on the wire follows it."""

from __future__ import annotations

import json

import pytest

from emulator.tokens import count_text, inline_media_tokens, truncate_text
from tests.emulator._support import AUTH, CHAT, MANAGED, MODEL, user

THINK = {"google": {"thinking_config": {"include_thoughts": True}, "thought_tag_marker": "think"}}


@pytest.mark.parametrize("text,tokens", [
    ("", 0),
    ("Hello, world!", 4),  # Hello , world !
    ("a b c", 3),
    ("12345678", 1),  # 8 characters: one token
    ("123456789", 3),  # 9 characters: ceil(9/4)
    ("internationalization", 5),  # 20 characters: ceil(20/4)
    ("café au lait", 3),  # \w is unicode-aware
    ('{"a":1}', 7),  # { " a " : 1 }
    ("  spaces\n\tdon't count  ", 5),  # spaces don ' t count
])
def test_count_text(text, tokens):
    assert count_text(text) == tokens


def test_truncate_text_keeps_whole_tokens():
    assert truncate_text("one two three four", 2) == ("one two", 2)
    assert truncate_text("one internationalization", 3) == ("one", 1)  # the long word costs 5
    assert truncate_text("short", 10) == ("short", 1)
    assert truncate_text("anything", 0) == ("", 0)


def test_inline_media_tokens():
    assert [inline_media_tokens(n) for n in (0, 1, 100, 101, 1000)] == [1, 1, 1, 2, 10]


def _usage(http, body):
    response = http.post(MANAGED + CHAT, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def test_prompt_tokens_follow_the_rule(http):
    one = _usage(http, user("Hello, world!"))["usage"]["prompt_tokens"]
    two = _usage(http, {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."},
                                                     {"role": "user", "content": "Hello, world!"}]})
    assert one == 3 + 4 + 4  # request overhead + one message + "Hello , world !"
    assert two["usage"]["prompt_tokens"] == 3 + 2 * 4 + 3 + 4


def test_response_schema_counts_as_prompt(http):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    rf = {"type": "json_schema", "json_schema": {"name": "c", "strict": True, "schema": schema}}
    plain = _usage(http, user("Paris"))["usage"]["prompt_tokens"]
    structured = _usage(http, user("Paris", response_format=rf))["usage"]["prompt_tokens"]
    assert structured - plain == count_text(json.dumps(schema))


def test_tools_count_as_prompt(http):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    plain = _usage(http, user("Weather?"))["usage"]["prompt_tokens"]
    with_tools = _usage(http, user("Weather?", tools=tools))["usage"]["prompt_tokens"]
    assert with_tools - plain == count_text(json.dumps(tools))


def test_completion_tokens_are_the_answer_plus_reasoning(http):
    plain = _usage(http, user("Explain tides"))
    content = plain["choices"][0]["message"]["content"]
    assert plain["usage"]["completion_tokens"] == count_text(content)
    assert "completion_tokens_details" not in plain["usage"]

    thinking = _usage(http, user("Explain tides", extra_body=THINK))
    content = thinking["choices"][0]["message"]["content"]
    thought, _, answer = content.removeprefix("<think>").partition("</think>")
    usage = thinking["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == count_text(thought)
    assert usage["completion_tokens"] == count_text(thought) + count_text(answer)


def test_thoughts_without_a_marker_are_billed_but_not_shown(http):
    body = user("Explain tides", extra_body={"google": {"thinking_config": {"include_thoughts": True}}})
    answer = _usage(http, body)
    assert "<" not in answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


def test_thinking_budget_caps_reasoning(http):
    body = user("Explain tides", google={"thinking_config": {"thinking_budget": 5}, "thought_tag_marker": "think"})
    assert _usage(http, body)["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5


def test_max_tokens_cuts_the_answer(http):
    full = _usage(http, user("Tell me everything about the moon"))
    cut = _usage(http, user("Tell me everything about the moon", max_tokens=6))
    newer = _usage(http, user("Tell me everything about the moon", max_completion_tokens=6))

    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 6
    assert full["choices"][0]["message"]["content"].startswith(cut["choices"][0]["message"]["content"])
    assert newer["usage"]["completion_tokens"] == 6


def test_thinking_can_eat_the_whole_budget(http):
    body = user("Tell me about the moon", max_tokens=4, extra_body={"google": {"thinking_config": {"thinking_budget": 1000}}})
    answer = _usage(http, body)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["message"]["content"] == ""
    assert answer["usage"]["completion_tokens"] == answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4


def test_n_choices_differ_and_usage_sums_them(http):
    answer = _usage(http, user("Name a colour", n=3))
    contents = [c["message"]["content"] for c in answer["choices"]]
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert len(set(contents)) == 3
    assert answer["usage"]["completion_tokens"] == sum(count_text(c) for c in contents)
