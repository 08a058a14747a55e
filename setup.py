"""Thin on purpose: everything is in pyproject.toml. Dataflow workers install the job with --setup_file ./setup.py."""

from setuptools import setup

setup()
