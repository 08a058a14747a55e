"""The Beam shell: composite PTransforms and thin DoFns over the Beam-free core (``client/``, ``schemas/``).

    with beam.Pipeline(options=options) as p:
        read = p | "ReadPrompts" >> ReadPrompts("prompts/*.jsonl")
        called = read.records | "CallChatCompletions" >> CallChatCompletions(client_config)
        called.results | "WriteResults" >> WriteResults("out/results")
        (read.errors, called.errors) | "AllErrors" >> beam.Flatten() | "WriteErrors" >> WriteErrors("out/errors")
"""

from transforms.call import CallChatCompletions
from transforms.read import ReadPrompts
from transforms.write import WriteErrors, WriteResults

__all__ = ["CallChatCompletions", "ReadPrompts", "WriteErrors", "WriteResults"]
