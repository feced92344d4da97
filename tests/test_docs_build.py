"""The documentation build as .ci/run runs it fails on any warning.

``mkdocs build --strict`` stops at the first warning's count, but ``--quiet`` raises mkdocs'
log level to errors, so with both flags no warning is ever counted and a site with broken links
or unparsable docstrings builds. The test builds a one-page site with the flags .ci/run uses
(read from .ci/run) twice: with a link that resolves, which must build, and with one that does
not, which mkdocs reports as a warning and which must fail the build.
"""

from docs_site import build, one_page_site

PAGE = "probe.md"
TEXT = "# Probe\n\nSee [the other page]({target}).\n"


def test_a_docs_warning_fails_the_build_as_ci_runs_it(tmp_path):
    linked = one_page_site(tmp_path / "linked", PAGE, TEXT.format(target=PAGE))
    fine = build(linked)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert (linked / "site" / "tutorials" / "probe" / "index.html").is_file()

    broken = one_page_site(tmp_path / "broken", PAGE, TEXT.format(target="missing.md"))
    failed = build(broken)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output
    assert "WARNING" in output and "missing.md" in output, output
