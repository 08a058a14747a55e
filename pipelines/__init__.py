"""Runnable pipelines: the main job (``extract``) and its options. Nothing else lives here."""
