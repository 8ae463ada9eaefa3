"""Measurements and the cost model: what the two functions cost and how fast they run.

``python -m benchmarks`` (``make bench``) measures; ``python -m benchmarks.cost``
(``make cost``) prices a workload or real Lambda REPORT lines;
``python -m benchmarks.report`` renders the results into Markdown and charts.
"""

import sys
from pathlib import Path

# The benchmarks use the handlers' shared helpers (lambda_common), as the images do.
_COMMON = str(Path(__file__).resolve().parent.parent / "lambda_images" / "common")
if _COMMON not in sys.path:
    sys.path.append(_COMMON)
