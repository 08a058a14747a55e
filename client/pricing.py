"""Token prices per model and service tier, from a dated data file, and the cost of a request.

    >>> table = PriceTable.load()              # the bundled client/prices.json
    >>> table.cost("google/gemini-2.0-flash-001", prompt_tokens=1_000_000, completion_tokens=0)
    0.15
    >>> table.cost("google/gemini-2.0-flash-001", 1_000_000, 0, tier="batch")     # half price
    0.075
    >>> PriceTable.load("my_prices.json")      # same shape, the user's own prices (--price_table)

Tiers: ``standard`` (online, the table's prices), ``flex`` (Flex PayGo), ``priority`` (Priority PayGo) and ``batch``
(Vertex batch prediction). A tier's price is the model's own entry for it when the table has one
(``"google/gemini-2.5-flash": {"input": 0.30, "output": 2.50, "flex": {"input": 0.15, "output": 1.25}}``), else the
standard price times the table's ``tier_multipliers`` (bundled: flex 0.5, batch 0.5, priority 1.8 — the last an
assumption), else times `DEFAULT_MULTIPLIERS` for a table written before tiers existed.

Reasoning (thinking) tokens are billed as output tokens. Unknown models use the table's ``default`` prices, and the
table says which date its prices were taken on: check them against Google's pricing page before trusting a budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_MULTIPLIERS", "PriceTable", "TIERS"]

_BUNDLED = Path(__file__).with_name("prices.json")
TIERS = ("standard", "flex", "priority", "batch")
DEFAULT_MULTIPLIERS = {"standard": 1.0, "flex": 0.5, "priority": 1.8, "batch": 0.5}


def _pair(p: dict) -> tuple[float, float]:
    return float(p["input"]), float(p["output"])


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    prices: dict[str, tuple[float, float]]  # model -> (input, output) USD per 1M tokens, standard tier
    default: tuple[float, float]
    multipliers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MULTIPLIERS))
    tier_prices: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # (model, tier) overrides

    @classmethod
    def load(cls, path: str | None = None) -> "PriceTable":
        data = json.loads(Path(path).read_text() if path else _BUNDLED.read_text())
        prices = {m: _pair(p) for m, p in data["per_million_tokens"].items()}
        overrides = {(m, tier): _pair(p[tier]) for m, p in data["per_million_tokens"].items()
                     for tier in TIERS if isinstance(p.get(tier), dict)}
        multipliers = {**DEFAULT_MULTIPLIERS, **{k: float(v) for k, v in (data.get("tier_multipliers") or {}).items()}}
        d = data.get("default", {"input": 0.0, "output": 0.0})
        return cls(as_of=str(data.get("as_of", "unknown")), prices=prices, default=_pair(d),
                   multipliers=multipliers, tier_prices=overrides)

    def _model(self, model: str | None) -> str | None:
        if model in self.prices:
            return model
        if model and f"google/{model}" in self.prices:  # "gemini-2.0-flash-001" as some servers report it
            return f"google/{model}"
        return None

    def rates(self, model: str | None, tier: str = "standard") -> tuple[float, float]:
        """(input, output) USD per 1M tokens of ``model`` at ``tier``."""
        known = self._model(model)
        if known is not None and (known, tier) in self.tier_prices:
            return self.tier_prices[(known, tier)]
        rate_in, rate_out = self.prices[known] if known is not None else self.default
        factor = self.multipliers.get(tier, 1.0)
        return rate_in * factor, rate_out * factor

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int, tier: str = "standard") -> float:
        """USD for one request; completion_tokens includes reasoning tokens."""
        rate_in, rate_out = self.rates(model, tier)
        return (prompt_tokens * rate_in + completion_tokens * rate_out) / 1_000_000
