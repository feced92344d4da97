import json

import numpy as np
import pytest
import torch

from disco import exact
from disco.distributions import EnumerableLM, TextSample
from disco.features import (
    feature,
    from_import_path,
    length_between,
    phrase_present,
    regex_match,
    word_present,
)
from disco.io import load_ebm, save_ebm
from disco.scorers import BooleanScorer


def texts(*items):
    return [TextSample(tuple(range(len(t.split()) + 1)), t) for t in items]


def test_builtin_features():
    xs = texts("A good film", "goodness me", "bad", "very good  film indeed")
    assert word_present("good").score(xs).tolist() == [1, 0, 0, 1]
    assert word_present("Good", case_sensitive=True).score(xs).tolist() == [0, 0, 0, 0]
    assert phrase_present("good film").score(xs).tolist() == [1, 0, 0, 1]
    assert regex_match(r"^go+d").score(xs).tolist() == [0, 1, 0, 0]
    assert regex_match(r"^a", flags="i").score(xs).tolist() == [1, 0, 0, 0]
    assert length_between(2, 4).score(xs).tolist() == [1, 1, 1, 0]
    assert from_import_path("feature_helpers:word_count", kind="real").score(xs).tolist() == [
        3,
        2,
        1,
        4,
    ]


def test_specs_rebuild_the_same_feature():
    xs = texts("A good film", "goodness me", "bad", "very good  film indeed")
    for scorer in [
        word_present("good"),
        phrase_present("good film"),
        regex_match("o+"),
        length_between(1, 3),
        from_import_path("feature_helpers:starts_with_good"),
    ]:
        rebuilt = feature(json.loads(json.dumps(scorer.spec)), allow_imports=True)
        assert torch.equal(rebuilt.score(xs), scorer.score(xs)), scorer.spec
    negated = feature({"type": "not", "feature": {"type": "word", "word": "good"}})
    assert negated.score(xs).tolist() == [0, 1, 1, 0]
    named = feature({"type": "word", "word": "bad", "name": "is_bad"})
    assert named.name == "is_bad" and feature(named.spec).name == "is_bad"
    named_not = feature({"type": "not", "feature": {"type": "word", "word": "bad"}, "name": "ok"})
    assert named_not.name == "ok" and feature(named_not.spec).name == "ok"
    # a negation made in Python (e.g. by constrain for a moment of 0.0) is still data
    assert feature(word_present("good").negation().spec).score(xs).tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "colour"}, "unknown feature type 'colour'"),
        ({"word": "x"}, "'type' key"),
        ({"type": "word", "word": ""}, "non-empty"),
        ({"type": "word", "wrd": "x"}, "bad settings for a 'word' feature"),
        ({"type": "regex", "pattern": "("}, "invalid regular expression"),
        ({"type": "length", "min": 5, "max": 2}, "min_tokens <= max_tokens"),
        ({"type": "function", "path": "nowhere"}, "package.module:function"),
        ({"type": "function", "path": "feature_helpers:missing"}, "no attribute"),
        ({"type": "function", "path": "no_such_module_xyz:f"}, "cannot import"),
        ({"type": "not"}, "needs feature"),
        ({"type": "not", "feature": {"type": "word", "word": "a"}, "colour": 1}, "unknown"),
        (
            {
                "type": "not",
                "feature": {
                    "type": "function",
                    "path": "feature_helpers:word_count",
                    "kind": "real",
                },
            },
            "boolean features only",
        ),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        feature(spec, allow_imports=True)


def test_save_load_gives_identical_log_scores(tmp_path):
    base = EnumerableLM(tokens=("good", "bad", "film"), max_length=3, contexts=("", "x"), seed=3)
    support, _ = base.enumerate_support()
    uniform = np.full(len(support), -np.log(len(support)))
    ebm = base.constrain(
        [word_present("good"), length_between(3, 3), word_present("bad")],
        [0.3, 0.6, 1.0],
        samples=support,
        proposal_log_probs=uniform,
    )
    save_ebm(ebm, tmp_path / "ebm")
    loaded = load_ebm(tmp_path / "ebm")
    for context in ("", "x"):
        assert torch.equal(loaded.log_score(support, context), ebm.log_score(support, context))
    assert np.array_equal(loaded.fit_report.coefficients, ebm.fit_report.coefficients)
    assert loaded.fit_report.pointwise == ["word:bad"]
    assert exact.moments(loaded.log_score(support).numpy(), word_present("good").score(support))[
        0
    ] == pytest.approx(0.3, abs=1e-8)
    document = json.loads((tmp_path / "ebm" / "ebm.json").read_text())
    assert document["format"] == "disco-ebm" and document["base"]["type"] == "enumerable"


def test_unsaveable_and_malformed(tmp_path):
    base = EnumerableLM()
    ebm = base * BooleanScorer(lambda s, c: True, name="lambda_feature")
    with pytest.raises(ValueError, match=r"lambda_feature.*no specification"):
        save_ebm(ebm, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no saved EBM"):
        load_ebm(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ebm.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a disco EBM"):
        load_ebm(tmp_path / "bad")
