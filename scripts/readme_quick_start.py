"""Print the README's quick start (the Python block under "Quick start") and a check, as one program.

`python -c "$(python scripts/readme_quick_start.py README.md)"` runs it: scripts/test_wheel.sh
does, against an installed wheel. tests/test_readme.py runs the same block against the checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from markdown_pages import ROOT, fenced_blocks  # tests/ holds the one parser

readme = Path(sys.argv[1]).resolve()
(block,) = fenced_blocks(str(readme.relative_to(ROOT)), "Quick start", "python")
# The quick start asks for 'good' in 80% of samples; the exact rate of the fitted target (fitted on
# samples, so not exactly 0.8) must be close.
check = """
rate = exact.moments(target.log_score(support), has_good.score(support))[0]
assert abs(rate - 0.8) < 0.05, rate
print("quick start: ok")
"""
print(block + check)
