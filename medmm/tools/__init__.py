"""Benchmark and load tools, outside the runtime: nothing in the library imports this package (tests/test_layout.py).

* ``bench``: ``python -m medmm bench`` (latency / throughput / memory / energy, runtimes side by side); the CLI
  imports it only for that command. ``scripts/load_test.py`` drives the app over HTTP.
"""
