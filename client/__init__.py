"""The engine: plain Python with no Beam import — targets and auth, request building, the call with retries and
limits, response parsing. The Beam shell (``transforms/``) only wires it into DoFns."""
