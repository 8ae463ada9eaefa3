"""Measurements and the cost model: what the two functions cost and how fast they run.

``python -m benchmarks`` (``make bench``) measures; ``python -m benchmarks.cost``
(``make cost``) prices a workload or real Lambda REPORT lines;
``python -m benchmarks.report`` renders the results into Markdown and charts.
"""
