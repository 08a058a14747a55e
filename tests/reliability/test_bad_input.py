"""Bad input: hypothesis-generated JSONL lines (valid and broken records, odd unicode, huge fields, deep nesting,
BOMs, CRLF, empty objects, wrong types, binary garbage) through ``schemas.records.parse_line`` (many examples) and
through whole pipeline runs (a few larger generated files).

The promise: never a crash, and every non-blank line comes out exactly once -- a result or an error record that
can be written (serialised) and found again (by its id when the line had one).

Two kinds of line used to crash the whole run at the write step (see docs/reliability.md "Bugs found"): JSON
``\\ud800``-style escapes that decode to lone surrogates, and values nested 256-993 levels deep. They are read
errors now; the tests below keep them so.
"""

from __future__ import annotations

import collections
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import RAW_KEEP_BYTES, ErrorRecord, InputRecord, parse_line
from tests.reliability.conftest import settled_stats

pytestmark = [pytest.mark.e2e]

READ_ERROR_TYPES = {"invalid_json", "invalid_encoding", "invalid_record", "not_an_object", "record_too_large"}
SAFE_DEPTH = 200  # values nested ~250-993 deep cannot be serialised: read errors (tested below)
ODD = ["\u2028", "\u2029", "\x85", "\ufeff", "e\u0301", "\U0001F469\u200D\U0001F469\u200D\U0001F467", "\u202e",
       "\x00", "\x1b[31m", "\U0001D518\U0001D52B", "\r", "\t", "\\", "\"", "</script>", "\u0000\u0001", "\uFFFD",
       "\u00e9t\u00e9", "\u4e2d\u6587", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", " "]

# Text with no lone surrogates (category Cs): those are the separate, known bug below.
text = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
                 st.lists(st.sampled_from(ODD), max_size=6).map("".join))
nonblank = text.filter(lambda s: s.strip() != "")
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                        st.floats(allow_nan=False, allow_infinity=False), text)
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                               st.dictionaries(text, inner, max_size=4)),
                          max_leaves=16)


def dumps(obj, ascii_: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_).encode("utf-8")


@st.composite
def record_line(draw, rid: str | None) -> bytes:
    """One line of some kind. ``rid`` is put in the record's id where the kind allows."""
    ascii_ = draw(st.booleans())
    base = {} if rid is None else {"id": rid}
    kind = draw(st.sampled_from(["prompt", "messages", "wrong_type", "unknown_field", "empty", "not_object",
                                 "cut", "garbage", "deep", "huge", "blank"]))
    if kind == "prompt":
        rec = {**base, "prompt": draw(nonblank)}
        if draw(st.booleans()):
            rec["metadata"] = draw(json_value)
        if draw(st.booleans()):
            rec["system"] = draw(text)
        line = dumps(rec, ascii_)
    elif kind == "messages":
        msgs = draw(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system",
                                                                              "wizard"]),
                                                     "content": st.one_of(text, st.none(), st.integers())}),
                             min_size=0, max_size=3))
        line = dumps({**base, "messages": msgs}, ascii_)
    elif kind == "wrong_type":
        field = draw(st.sampled_from(["prompt", "messages", "params", "system", "model", "google", "schema"]))
        value = draw(json_value.filter(lambda v: not isinstance(v, str)))
        line = dumps({**base, "prompt": "x", field: value} if field != "prompt" else {**base, "prompt": value},
                     ascii_)
    elif kind == "unknown_field":
        line = dumps({**base, "promt": draw(text)}, ascii_)
    elif kind == "empty":
        line = draw(st.sampled_from([b"{}", b"[]", b"null", b'""', b"0", b"{ }"]))
    elif kind == "not_object":
        line = dumps(draw(json_value.filter(lambda v: not isinstance(v, dict))), ascii_)
    elif kind == "cut":
        full = dumps({**base, "prompt": draw(nonblank), "metadata": draw(json_value)}, ascii_)
        line = full[:draw(st.integers(1, max(1, len(full) - 1)))]
    elif kind == "garbage":
        line = draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b"")
    elif kind == "deep":
        depth = draw(st.one_of(st.integers(1, SAFE_DEPTH), st.integers(10_000, 50_000)))  # > any recursion limit
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        where = draw(st.sampled_from(["metadata", "prompt"]))
        nested = opener * depth + "1" + closer * depth
        line = ("{" + (f'"id": {json.dumps(rid)}, ' if rid else "")
                + (f'"prompt": "x", "metadata": {nested}' if where == "metadata" else f'"prompt": {nested}')
                + "}").encode()
    elif kind == "huge":
        size = draw(st.sampled_from([RAW_KEEP_BYTES + 1, 300_000, (1 << 20) + 10]))
        line = dumps({**base, "prompt": "p" * size}, True)
    else:
        line = draw(st.sampled_from([b"", b"   ", b"\t", b" \t "]))
    if draw(st.integers(0, 9)) == 0:
        line = b"\xef\xbb\xbf" + line  # a byte-order mark (parse_line drops it on any line)
    return line


def check_one(line: bytes, out, rid: str | None) -> None:
    assert isinstance(out, (InputRecord, ErrorRecord))
    dumped = json.loads(out.model_dump_json())  # the write step must be able to serialise it
    if isinstance(out, ErrorRecord):
        assert out.stage == "read" and out.error_type in READ_ERROR_TYPES and out.message
        assert not out.retryable and out.raw is not None
        assert len(out.raw.encode("utf-8")) <= RAW_KEEP_BYTES + len("…[truncated]".encode())
        if rid is not None and out.id is not None:
            # A cut-off line's id is recovered by a regex from the raw text, its JSON escapes decoded.
            escaped = {rid, json.dumps(rid)[1:-1], json.dumps(rid, ensure_ascii=False)[1:-1]}
            assert out.id in escaped if out.error_type == "invalid_json" else out.id == rid
    else:
        assert isinstance(out.id, str) and out.id
        assert (out.prompt is None) != (out.messages is None)
        if rid is not None:
            assert out.id == rid
        assert dumped["id"] == out.id


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_parse_line_never_raises_and_its_output_is_writable(data):
    rid = data.draw(st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                                                 max_size=12)))
    line = data.draw(record_line(rid))
    crlf = data.draw(st.booleans())
    for form in (line + b"\r" if crlf else line, line.decode("utf-8", "replace")):
        check_one(line, parse_line(form), rid)


@given(st.integers(1, 50_000), st.sampled_from([("[", "]"), ('{"k":', "}")]))
@settings(max_examples=60, deadline=None)
def test_deep_nesting_never_raises(depth, brackets):
    opener, closer = brackets
    out = parse_line(f'{{"id": "d", "prompt": "x", "metadata": {opener * depth}1{closer * depth}}}')
    assert isinstance(out, (InputRecord, ErrorRecord))  # RecursionError is caught at any depth


# ---------------------------------------------------------------------------------------------- known bugs

LONE_SURROGATE_LINES = [
    b'{"id": "s1", "prompt": "x\\ud800y"}',  # an escape: valid JSON text, but not encodable as UTF-8
    b'{"id": "s2", "prompt": "ok", "metadata": {"note": "\\udc80"}}',
    b'{"id": "s3", "promt": "\\ud83d"}',  # an invalid record that keeps its (unencodable) fields
]
CUT_LINE_WITH_ESCAPED_ID = b'{"id": "caf\\u00e9-1", "prompt": "cut off he'  # json.dumps' default ensure_ascii


def test_cut_off_line_keeps_its_decoded_id():
    assert parse_line(CUT_LINE_WITH_ESCAPED_ID).id == "caf\u00e9-1"


DEEP_LINE = ('{"id": "deep", "prompt": "x", "metadata": ' + "[" * 300 + "]" * 300 + "}").encode()


@pytest.mark.parametrize("line", LONE_SURROGATE_LINES + [DEEP_LINE], ids=["prompt", "metadata", "invalid", "deep"])
def test_unwritable_values_are_read_errors(line):
    out = parse_line(line)
    assert isinstance(out, ErrorRecord) and out.stage == "read"
    json.loads(out.model_dump_json())


def test_one_unwritable_line_does_not_kill_the_run(run_job):
    good = [{"id": f"g{i}", "prompt": f"fine {i}"} for i in range(5)]
    out = run_job(good + [line.decode() for line in LONE_SURROGATE_LINES] + [DEEP_LINE.decode()])
    assert len(out.results) + len(out.errors) == 9


# ---------------------------------------------------------------------------------------------- whole runs

@st.composite
def jsonl_file(draw) -> tuple[bytes, list[bytes]]:
    """A file of 60-150 lines (each with a unique id where it can carry one), mixed \\n / \\r\\n endings, maybe a BOM
    and no final newline; returns (file bytes, the lines as the reader will see them)."""
    n = draw(st.integers(60, 150))
    lines = [draw(record_line(f"L{i:04d}" if draw(st.integers(0, 4)) else None)) for i in range(n)]
    # Small files: a 1 MiB record is covered by the parse_line test; here one ~300 kB prompt is enough.
    lines = [ln if len(ln) < 400_000 else ln[:300_000] for ln in lines]
    ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
    body = b"".join(ln + end for ln, end in zip(lines, ends))
    if draw(st.booleans()):
        body = body[:-len(ends[-1])]  # no newline at the end of the file
    return body, lines


@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(jsonl_file())
def test_generated_files_through_the_pipeline(vertex_emulator, tmp_path_factory, generated):
    body, lines = generated
    vertex_emulator.reset()
    src = tmp_path_factory.mktemp("fuzz") / "input.jsonl"
    src.write_bytes(body)
    nonblank = [ln for ln in lines if ln.strip()]
    limit = 200_000  # so the ~300 kB lines are `record_too_large` in the run too
    expected = [parse_line(ln, max_record_bytes=limit) for ln in nonblank]  # the oracle, per line

    from pipelines.extract import run
    from tests.conftest import read_jsonl

    out_dir = src.parent / "out"
    run(["--input", str(src), "--output", str(out_dir / "results"), "--errors", str(out_dir / "errors"),
         "--emulator_url", vertex_emulator.url, "--max_concurrency", "16", "--max_record_bytes", str(limit)])
    results, errors = read_jsonl(str(out_dir / "results")), read_jsonl(str(out_dir / "errors"))

    # Every non-blank line exactly once: the multiset of ids matches the oracle's (None for lines with no id).
    assert len(results) + len(errors) == len(nonblank)
    assert collections.Counter(r["id"] for r in results + errors) == collections.Counter(e.id for e in expected)
    read_errors = collections.Counter((e["id"], e["error_type"]) for e in errors if e["stage"] == "read")
    assert read_errors == collections.Counter((e.id, e.error_type) for e in expected if isinstance(e, ErrorRecord))
    sent = [e for e in expected if isinstance(e, InputRecord)]
    by_id = {r["id"]: r for r in results}
    for rec in sent:
        if rec.id in by_id and rec.id.startswith("L"):
            assert by_id[rec.id]["metadata"] == rec.metadata  # carried untouched
    stats = settled_stats(vertex_emulator)
    attempts = [r["attempts"] for r in results] + [e["attempts"] for e in errors if e["stage"] != "read"]
    assert stats["requests"] == sum(attempts) and max(attempts, default=0) <= 1  # no faults: nothing re-sent
    # Identical id-less lines are identical requests; anything else answered twice would be a double.
    keys = collections.Counter(r["request_key"] for r in results)
    assert stats["duplicate_ok"] == sum(1 for n in keys.values() if n > 1)


# ---------------------------------------------------------------------------------------------- values JSON cannot carry

NON_JSON_RECORDS = [  # Python's json module reads NaN/Infinity; no server can be sent them
    '{"id": "nan-param", "prompt": "x", "params": {"temperature": NaN}}',
    '{"id": "inf-param", "prompt": "x", "params": {"max_tokens": 1e400}}',
    '{"id": "nan-google", "prompt": "x", "google": {"thinking_config": {"thinking_budget": -Infinity}}}',
    '{"id": "nan-message", "messages": [{"role": "user", "content": "x", "name": NaN}]}',
]


def test_nan_and_infinity_are_bad_requests_never_sent(run_job, vertex_emulator, caplog):
    """A record holding NaN/Infinity where a request needs JSON is a permanent `bad_request` (nothing sent, no
    attempt counted, no stack trace logged), not an `internal_error`."""
    good = [{"id": "fine", "prompt": "fine"}]
    out = run_job(good + NON_JSON_RECORDS)
    by_id = out.by_id()
    assert set(by_id) == {"fine", "nan-param", "inf-param", "nan-google", "nan-message"}
    assert "error_type" not in by_id["fine"]
    for rid in ("nan-param", "inf-param", "nan-google", "nan-message"):
        err = by_id[rid]
        assert (err["error_type"], err["stage"], err["retryable"], err["attempts"]) == \
            ("bad_request", "request", False, 0), err
        assert "JSON" in err["message"]
    assert settled_stats(vertex_emulator)["requests"] == 1
    assert "internal error" not in caplog.text
