"""mesaopt benchmarks: each module measures a fast path against a baseline IN THE SAME RUN and reports ratios.

Run ``python -m benchmarks`` (all default benchmarks, JSON on stdout) or ``python -m benchmarks NAME``;
``python -m benchmarks time-to-curve`` is the long GPT training run (not part of the default set).
"""

from __future__ import annotations

BENCHMARKS = ("peaks", "lsa", "algorithms", "gpt", "startup")
