"""Helpers of ``test_load.py`` (the script owns the measurements and the command line).

- ``results.py``: what one run measured, and the figures derived from it
  (effectiveness, the ideal FIFO makespan, percentiles).
- ``report.py``: the text report, and the side-by-side comparison.
- ``plot.py``: the PNG (matplotlib).
- ``gateway.py``: starts and stops the gateways that ``--compare`` runs.
"""
