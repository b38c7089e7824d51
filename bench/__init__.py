"""qmill's benchmark suite (issues 7 and 11): strategy table, end to end, the sweep, goals.

``python -m bench.run`` (what ``make bench`` runs) measures everything in one run on the
machine it runs on, because that machine is noisy: only ratios measured side by side
mean anything. See docs/performance.md.
"""
