"""Token prices per model, from a dated data file, and the cost of a request.

    >>> table = PriceTable.load()              # the bundled client/prices.json
    >>> table.cost("google/gemini-2.0-flash-001", prompt_tokens=1_000_000, completion_tokens=0)
    0.15
    >>> PriceTable.load("my_prices.json")      # same shape, the user's own prices (--price_table)

Reasoning (thinking) tokens are billed as output tokens. Unknown models use the table's ``default`` prices, and the
table says which date its prices were taken on: check them against Google's pricing page before trusting a budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PriceTable"]

_BUNDLED = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    prices: dict[str, tuple[float, float]]  # model -> (input, output) USD per 1M tokens
    default: tuple[float, float]

    @classmethod
    def load(cls, path: str | None = None) -> "PriceTable":
        data = json.loads(Path(path).read_text() if path else _BUNDLED.read_text())
        prices = {m: (float(p["input"]), float(p["output"])) for m, p in data["per_million_tokens"].items()}
        d = data.get("default", {"input": 0.0, "output": 0.0})
        return cls(as_of=str(data.get("as_of", "unknown")), prices=prices,
                   default=(float(d["input"]), float(d["output"])))

    def rates(self, model: str | None) -> tuple[float, float]:
        if model in self.prices:
            return self.prices[model]
        if model and f"google/{model}" in self.prices:  # "gemini-2.0-flash-001" as some servers report it
            return self.prices[f"google/{model}"]
        return self.default

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one request; completion_tokens includes reasoning tokens."""
        rate_in, rate_out = self.rates(model)
        return (prompt_tokens * rate_in + completion_tokens * rate_out) / 1_000_000
