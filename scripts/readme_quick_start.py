"""Print the README's quick start (its first two Python blocks) as one program.

`python -c "$(python scripts/readme_quick_start.py README.md)"` runs it: scripts/test_wheel.sh
does, against an installed wheel. tests/test_readme.py runs every block against the checkout.
"""

import re
import sys
from pathlib import Path

blocks = re.findall(r"```python\n(.*?)```", Path(sys.argv[1]).read_text(), flags=re.S)
if len(blocks) < 2:
    sys.exit("readme_quick_start: the README has fewer than two Python blocks")
# The quick start asks for 'good' in 80% of samples; the exact rate of the fitted target (fitted on
# samples, so not exactly 0.8) must be close.
check = """
rate = exact.moments(target.log_score(support), has_good.score(support))[0]
assert abs(rate - 0.8) < 0.05, rate
print("quick start: ok")
"""
print("".join(blocks[:2]) + check)
