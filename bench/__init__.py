"""qmill's benchmark suite (issue 7): strategy table, end-to-end workloads, goals.

``python -m bench.run`` (what ``make bench`` runs) measures everything in one run on the
machine it runs on, because that machine is noisy: only ratios measured side by side
mean anything. See docs/performance.md.
"""
