"""The verdict on a finished run (pipelines/exit_codes.py): pure, from the summary."""

from pipelines.exit_codes import FAILED, OK, verdict


def summary(results: int, errors: int, **extra) -> dict:
    return {"results": results, "errors": errors, **extra}


def test_error_share_against_the_rate():
    assert verdict(summary(12, 2), 0.25) == (OK, [])  # the Quickstart
    code, reasons = verdict(summary(7, 3), 0.25)
    assert code == FAILED and "3 of 10 records are errors (30%)" in reasons[0]
    assert verdict(summary(0, 0), 0.25) == (OK, [])
    assert verdict(summary(0, 10), 1.0) == (OK, [])


def test_budget_exhausted_records_are_not_failures():
    s = summary(150, 150, errors_by_type={"budget_exhausted": 150})
    assert verdict(s, 0.25) == (OK, [])


def test_a_breaker_refusal_fails_the_run_whatever_the_rate():
    code, reasons = verdict(summary(100, 5, breaker_refused=5), 1.0)
    assert code == FAILED and "circuit breaker" in reasons[0]
