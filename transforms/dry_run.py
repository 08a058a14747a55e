"""DryRun (``--dry_run``): InputRecords → the request bodies they would send and what they would cost. No calls.

    dry = read.records | "DryRun" >> DryRun(client_config, prices, output_tokens=256)
    dry["estimates"]   # dicts: id, request_key, model, est_prompt_tokens, est_output_tokens, est_cost_usd, body
    dry["errors"]      # ErrorRecords for records that could not be sent (the same ones the real run would write)
    dry["totals"]      # one dict: records, tokens and cost in total and per model

The estimate itself is the Beam-free ``client.estimate.estimate``; this module only wires it and sums it.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from client.budget import NANO
from client.config import ClientConfig
from client.errors import ChatbeamError
from client.estimate import DryRunTotals, Estimate, estimate, unsendable
from client.pricing import PriceTable
from schemas.records import InputRecord

__all__ = ["DryRun"]

ESTIMATES, ERRORS, TOTALS = "estimates", "errors", "totals"


class _EstimateFn(beam.DoFn):
    def __init__(self, config: ClientConfig, prices: PriceTable, output_tokens: int, tier: str | None) -> None:
        self._config, self._prices, self._output_tokens, self._tier = config, prices, output_tokens, tier
        self._prompt = Metrics.counter("chatbeam", "est_prompt_tokens")
        self._output = Metrics.counter("chatbeam", "est_output_tokens")
        self._cost = Metrics.counter("chatbeam", "est_cost_nano_usd")

    def process(self, record: InputRecord):
        try:
            est = estimate(record, self._config, self._prices, self._output_tokens, self._tier)
        except ChatbeamError as exc:
            yield beam.pvalue.TaggedOutput(ERRORS, unsendable(record, exc))
            return
        self._prompt.inc(est.prompt_tokens)
        self._output.inc(est.output_tokens)
        self._cost.inc(round(est.cost_usd * NANO))
        yield est


class _TotalsFn(beam.CombineFn):
    def create_accumulator(self):
        return DryRunTotals()

    def add_input(self, totals, est):
        return totals.add(est)

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        return next(accumulators, DryRunTotals()).merge(accumulators)

    def extract_output(self, totals):
        return totals


class DryRun(beam.PTransform):
    """InputRecords → a dict of PCollections: ``estimates``, ``errors``, ``totals`` (see the module docstring)."""

    def __init__(self, config: ClientConfig, prices: PriceTable, output_tokens: int, tier: str | None = None) -> None:
        super().__init__()
        self._args = (config, prices, output_tokens, tier)

    def expand(self, records):
        prices, output_tokens = self._args[1], self._args[2]
        out = records | "Estimate" >> beam.ParDo(_EstimateFn(*self._args)).with_outputs(ERRORS, main=ESTIMATES)
        totals = (out[ESTIMATES]
                  | "Total" >> beam.CombineGlobally(_TotalsFn())
                  | "TotalsJson" >> beam.Map(DryRunTotals.to_json_dict, prices, output_tokens))
        estimates = out[ESTIMATES] | "EstimateJson" >> beam.Map(Estimate.to_json_dict)
        return {ESTIMATES: estimates, ERRORS: out[ERRORS], TOTALS: totals}
