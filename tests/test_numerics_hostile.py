"""Hostile and careless inputs to the numerical core: each test is one finding.

Every test here failed before its fix: wrong layouts read as zeros, overflow at large
log-ratios or features, silent truncation of arrays, scalars taken as vectors, an absolute
tolerance at tiny feature scales, copies of 10^8-sample inputs, regex features that hang.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from disco import _core, features, numerics

ROOT = Path(__file__).resolve().parents[1]


# --- layouts and argument types at the binding ----------------------------------------------


def test_grouped_divergences_and_fit_read_fortran_order():
    rng = np.random.default_rng(3)
    t, m = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    for kind in ("kl", "reverse_kl", "tv", "js"):
        want = _core.divergence_grouped(kind, t, m, m)
        assert np.all(want != 0)
        f = [np.asfortranarray(a) for a in (t, m, m)]
        np.testing.assert_array_equal(_core.divergence_grouped(kind, *f), want)
        np.testing.assert_array_equal(numerics.kl_divergence(*f) if kind == "kl" else want, want)
    phi = rng.normal(size=(50, 2))
    targets = phi.mean(0) + 0.1 * phi.std(0)
    want = _core.fit_coefficients(phi, targets)[0]
    got = _core.fit_coefficients(np.asfortranarray(phi), targets)[0]
    np.testing.assert_array_equal(got, want)


def test_grouped_shapes_must_agree():
    t = np.zeros((3, 4))
    with pytest.raises(ValueError, match="shape mismatch"):
        _core.divergence_grouped("kl", t, t[:2], t)
    with pytest.raises(ValueError, match="log_z"):
        _core.divergence_grouped("kl", t, t, t, np.zeros(2))


@pytest.mark.parametrize("kind", ["kl", "reverse_kl", "tv", "js"])
def test_contexts_without_samples_are_an_error(kind):
    empty = np.zeros((2, 0))
    with pytest.raises(ValueError, match="at least one sample"):
        numerics._divergence(kind, empty, empty, empty, None)


@pytest.mark.parametrize("bad", [2**64, 2**63, -1, True, 1.5, "100"])
def test_max_iterations_is_checked_with_value_error(bad):
    phi, target = np.array([[1.0], [0.0]]), np.array([0.5])
    with pytest.raises(ValueError, match="max_iterations"):
        _core.fit_coefficients(phi, target, max_iterations=bad)
    with pytest.raises(ValueError, match="max_iterations"):
        numerics.fit_coefficients(phi, target, max_iterations=bad)


@pytest.mark.parametrize("bad", [math.nan, -1.0, 0.0, "1e-8", True])
def test_tolerance_is_checked_with_value_error(bad):
    with pytest.raises(ValueError, match="tolerance"):
        numerics.fit_coefficients([1.0, 0.0], 0.5, tolerance=bad)


# --- QRS: log-ratios of any finite size -----------------------------------------------------


def test_qrs_large_log_ratios():
    curve = numerics.qrs_curve([7e5, 7e5 - 1, 7e5 - 2], log_betas=[7e5])
    want_log_z = 7e5 + math.log((1 + math.exp(-1) + math.exp(-2)) / 3)
    assert curve.log_z == pytest.approx(want_log_z, abs=1e-9)
    assert 7e5 - 0.7 < curve.log_z < 7e5 - 0.69
    # AR(β = the largest ratio) = mean(min(r, β)) / β = mean(r) / r_max.
    assert curve.acceptance_rate[0] == pytest.approx(
        (1 + math.exp(-1) + math.exp(-2)) / 3, rel=1e-12
    )
    assert numerics.qrs_curve([7e5, 0.0], log_betas=[7e5]).log_z == pytest.approx(
        7e5 - math.log(2), abs=1e-9
    )
    tiny = numerics.QRSIndex([-7e5, -7e5 - 1])
    assert tiny.acceptance_rate(log_betas=-7e5 - 0.5) == pytest.approx(
        numerics.QRSIndex([0.0, -1.0]).acceptance_rate(log_betas=-0.5), rel=1e-12
    )
    huge = numerics.QRSIndex([1e308, -1e308, 0.0])
    assert huge.log_z == pytest.approx(1e308 - math.log(3), rel=1e-15)


grid = st.integers(-400, 400).map(lambda v: v / 8)


@given(
    ratios=st.lists(grid, min_size=1, max_size=40),
    weights=st.one_of(st.none(), st.lists(grid, min_size=40, max_size=40)),
    betas=st.lists(grid, min_size=1, max_size=5),
    shift=st.sampled_from([7e5, -7e5, 1e9, -1e9, 2.0**40]),
    weight_shift=st.sampled_from([0.0, 7e5, -7e5]),
)
def test_qrs_curves_are_shift_invariant(ratios, weights, betas, shift, weight_shift):
    # Values on a 1/8 grid: adding the shifts is exact, so both problems are the same one.
    lr = np.array(ratios)
    w = None if weights is None else np.array(weights[: len(lr)])
    b = np.array(betas)
    ref = numerics.qrs_curve(lr, log_betas=b, log_weights=w, js=True)
    moved = numerics.qrs_curve(
        lr + shift,
        log_betas=b + shift,
        log_weights=None if w is None else w + weight_shift,
        js=True,
    )
    for key in ("acceptance_rate", "kl", "tv", "js"):
        np.testing.assert_allclose(getattr(moved, key), getattr(ref, key), rtol=1e-9, atol=1e-12)
    ulp = np.spacing(abs(shift))
    assert moved.log_z - shift == pytest.approx(ref.log_z, abs=8 * ulp + 1e-12)
    np.testing.assert_allclose(moved.log_z_beta - shift, ref.log_z_beta, atol=8 * ulp + 1e-12)


# --- other public numerics ------------------------------------------------------------------


def test_weighted_moments_near_the_largest_float():
    assert numerics.weighted_moments([0.0, 0.0], [9e307, 9e307]) == 9e307
    got = numerics.weighted_moments([0.0, 0.0, -math.inf], [[1.7e308, -1.7e308]] * 2 + [[0, 0]])
    np.testing.assert_array_equal(got, [1.7e308, -1.7e308])
    mixed = numerics.weighted_moments([0.0, math.log(3)], [1e308, -1e308])
    assert mixed == pytest.approx(-0.5e308, rel=1e-15)


def test_qrs_accept_takes_one_beta():
    with pytest.raises(ValueError, match="beta must be a single number"):
        numerics.qrs_accept([0.0, 1.0], [0.5, 0.5], beta=[1, 2])
    with pytest.raises(ValueError, match="log_beta must be a single number"):
        numerics.qrs_accept([0.0, 1.0], [0.5, 0.5], log_beta=np.array([0.0]))


def test_scalars_are_not_taken_as_vectors():
    for scalar in (3.0, np.float64(3.0), np.array(3.0), torch.tensor(3.0)):
        with pytest.raises(ValueError, match="must be 1-D"):
            numerics.logsumexp(scalar)
        with pytest.raises(ValueError, match="must be 1-D"):
            numerics.as_vector(scalar, "x")
    with pytest.raises(ValueError, match="log_z must be a single number"):
        numerics.kl_divergence([0.0, 1.0], [0.0, 1.0], log_z=[0.0])
    with pytest.raises(ValueError, match="betas must be a number or 1-D"):
        numerics.qrs_curve([0.0, 1.0], betas=[[1.0, 2.0]])
    with pytest.raises(ValueError, match="current_log_ratio must be a single number"):
        numerics.imh_chain([0.0], [0.5], current_log_ratio=[0.0])


@pytest.mark.parametrize("scale", [1e-8, 1e-3, 1e3, 1e8])
def test_fit_tolerance_is_relative_to_the_feature_scale(scale):
    phi = np.array([1.0, 0.0, 0.0, 0.0])
    ref = numerics.fit_coefficients(phi, 0.5)
    fit = numerics.fit_coefficients(phi * scale, 0.5 * scale)
    assert fit.iterations >= 1
    assert fit.coefficients[0] * scale == pytest.approx(ref.coefficients[0], rel=1e-7)
    assert fit.coefficients[0] * scale == pytest.approx(math.log(3), rel=1e-7)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_collinearity_message_at_extreme_scales(scale):
    phi = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [0.0, 0.0]]) * scale
    with pytest.raises(ValueError) as err:
        numerics.fit_coefficients(phi, [1.5 * scale, 3 * scale])
    message = str(err.value)
    assert "features 0 and 1 are collinear" in message
    assert "feature 1 is an affine function of feature 0" in message


# --- memory: one copy, where the algorithm needs it -------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from disco import numerics

    def rss(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise RuntimeError(key)

    def extra(run):
        # Peak resident memory of `run` above what is resident before it: VmHWM is reset first
        # (writing 5 to clear_refs), so earlier peaks do not hide this one.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = rss("VmRSS:")
        run()
        return rss("VmHWM:") - before

    n = int(sys.argv[1])
    x = np.random.default_rng(0).normal(size=n)
    out = {"input": x.nbytes}
    out["qrs_index"] = extra(lambda: numerics.QRSIndex(x))
    np.greater(x, 0.5, out=x, casting="unsafe")  # a 0/1 feature, in place
    out["fit_coefficients"] = extra(lambda: numerics.fit_coefficients(x, 0.5))
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_is_one_copy_of_the_input():
    """QRSIndex keeps one sorted copy, fit_coefficients a centred one (docs/design.md §3.2, §7.2).

    Bound: at most 1.3 input sizes above what was resident, plus 24 MiB for the allocator
    and the block states. Before the fix: QRSIndex about 3 copies, fit_coefficients about 4.
    """
    import json

    n = 10**7  # 76 MiB of float64
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    bound = 1.3 * measured["input"] + 24 * 2**20
    for op in ("qrs_index", "fit_coefficients"):
        assert measured[op] <= bound, (op, measured, bound)


# --- regex features in linear time ---------------------------------------------------------


def test_regex_feature_cannot_hang():
    # `re.search(r"^(\\w+\\s?)*$", text)` backtracks exponentially on this text (it never ends
    # in tests); the automaton answers at once.
    text = "an ordinary sentence of a few words that does not end in a word!" * 4
    feature = features.regex_match(r"^(\w+\s?)*$")
    assert feature.score([text, "only words here"]).tolist() == [0.0, 1.0]


def test_regex_feature_matches_python_re_on_ordinary_patterns():
    texts = ["In the beginning God created", "godly\nLORD", "", "Ünïcödé wörds 42"]
    for pattern, flags, py_flags in [
        (r"\bgod\b", "i", re.IGNORECASE),
        (r"^LORD", "m", re.MULTILINE),
        (r"y.L", "s", re.DOTALL),
        (r"\w+ \d+$", "", 0),
        (r"[aeiou]{2,}", "", 0),
    ]:
        got = features.regex_match(pattern, flags).score(texts).tolist()
        want = [float(re.search(pattern, t, py_flags) is not None) for t in texts]
        assert got == want, (pattern, flags)


@pytest.mark.parametrize("pattern", [r"(a)\1", r"foo(?=bar)", r"(?<!\w)x", r"(?P<w>a)(?P=w)"])
def test_regex_features_refuse_backtracking_syntax_when_built(pattern):
    with pytest.raises(ValueError, match=r"invalid regular expression.*linear time"):
        features.regex_match(pattern)
    with pytest.raises(ValueError, match="invalid regular expression"):
        features.feature({"type": "regex", "pattern": pattern})


# --- portability: x86-64 dispatch compiles away elsewhere -----------------------------------

X86_ONLY = re.compile(r"target_feature|is_x86_feature_detected|std::arch::x86_64|forced_level")


def gated_regions(source: str) -> list[tuple[int, int]]:
    """Byte ranges of the items and blocks that follow `#[cfg(target_arch = "x86_64")]`."""
    regions = []
    for m in re.finditer(r'#\[cfg\(target_arch = "x86_64"\)\]', source):
        start = source.index("{", m.end())
        depth, i = 0, start
        while True:
            depth += {"{": 1, "}": -1}.get(source[i], 0)
            if depth == 0:
                break
            i += 1
        regions.append((m.start(), i))
    return regions


def test_every_x86_path_is_under_cfg_target_arch():
    sources = sorted((ROOT / "rust" / "src").rglob("*.rs"))
    assert sources
    for path in sources:
        text = path.read_text()
        regions = gated_regions(text)
        for m in X86_ONLY.finditer(text):
            line_start = text.rfind("\n", 0, m.start()) + 1
            if text[line_start : m.start()].lstrip().startswith("//"):
                continue
            inside = any(a <= m.start() <= b for a, b in regions)
            line = text.count("\n", 0, m.start()) + 1
            assert inside, f'{path.name}:{line}: {m.group()} outside #[cfg(target_arch = "x86_64")]'


def _installed_targets() -> set[str]:
    try:
        out = subprocess.run(
            ["rustup", "target", "list", "--installed"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(out.stdout.split())


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64-unknown-linux-gnu", "aarch64-apple-darwin"])
def test_core_compiles_for_other_architectures(target, tmp_path_factory):
    if target not in _installed_targets():
        pytest.skip(f"rustup target {target} is not installed (rustup target add {target})")
    target_dir = tmp_path_factory.getbasetemp() / "cargo-cross"
    env = {
        **os.environ,
        "CARGO_TARGET_DIR": str(target_dir),
        "RUSTFLAGS": "-D warnings",
        # abi3 bindings need no interpreter of the target to be checked.
        "PYO3_CROSS_PYTHON_VERSION": "3.10",
    }
    for cargo_features in (["--no-default-features"], []):
        result = subprocess.run(
            ["cargo", "check", "--release", "--target", target, "--lib", *cargo_features],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert result.returncode == 0, (cargo_features, result.stderr[-4000:])


# --- one divergence type, parsed once at the binding ------------------------------------------


def test_divergence_names_are_parsed_once_with_value_errors():
    t = np.zeros(3)
    for call in (
        lambda kind: _core.divergence(kind, t, t, t),
        lambda kind: _core.divergence_grouped(kind, t[None], t[None], t[None]),
        lambda kind: _core.f_divergence(kind, t, t, t, 0.0),
        lambda kind: _core.f_pseudo_rewards(kind, t, t, t, 0.0, 30.0),
    ):
        with pytest.raises(ValueError, match=r"unknown f-divergence .hellinger."):
            call("hellinger")
        with pytest.raises(ValueError, match="kind must be a str"):
            call(3)
    # The chi² divergences have an f-DPG estimate (with a standard error) only.
    assert _core.f_divergence("chi2", t, t, t, 0.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="f_divergence only"):
        _core.divergence("reverse_chi2", t, t, t)
