"""Pydantic models: the input, result and error records; bundled example output schemas; the schema registry."""
