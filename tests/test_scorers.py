import math

import numpy as np
import pytest
import torch

from disco.distributions import EnumerableLM, TextSample
from disco.scorers import (
    BooleanScorer,
    ExponentialScorer,
    PipelineScorer,
    PositiveScorer,
    Product,
    Scorer,
)


def samples_of(*texts):
    return [TextSample((i,), t) for i, t in enumerate(texts)]


def test_scorer_vectorises_and_allows_negative_values():
    length = Scorer(lambda s, c: len(s.text) - 3, name="length")
    out = length.score(samples_of("a", "abcd", ""))
    assert out.dtype == torch.float64 and out.tolist() == [-2.0, 1.0, -3.0]
    batched = Scorer(lambda xs, c: [len(x.text) for x in xs], batched=True)
    assert batched.score(samples_of("ab", "")).tolist() == [2.0, 0.0]


def test_scorer_uses_the_context():
    same = Scorer(lambda s, c: float(s.text == c))
    assert same.score(samples_of("x", "y"), context="y").tolist() == [0.0, 1.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_scorer_refuses_non_finite_values(bad):
    with pytest.raises(ValueError, match="sample 1"):
        Scorer(lambda s, c: bad if s.text == "b" else 0.0).score(samples_of("a", "b"))


def test_scorer_refuses_wrong_length():
    with pytest.raises(ValueError, match="3 values for 2 samples"):
        Scorer(lambda xs, c: [1, 2, 3], batched=True).score(samples_of("a", "b"))


def test_positive_and_boolean_log_scores_are_exact():
    positive = PositiveScorer(lambda s, c: float(len(s.text)))
    assert positive.log_score(samples_of("", "ab")).tolist() == [-math.inf, math.log(2)]
    with pytest.raises(ValueError, match="non-negative"):
        PositiveScorer(lambda s, c: -1.0).score(samples_of("a"))
    has_a = BooleanScorer(lambda s, c: "a" in s.text)
    assert has_a.score(samples_of("a", "b")).tolist() == [1.0, 0.0]
    assert has_a.log_score(samples_of("a", "b")).tolist() == [0.0, -math.inf]
    assert has_a.negation().score(samples_of("a", "b")).tolist() == [0.0, 1.0]


def test_exponential_scorer():
    f1 = Scorer(lambda s, c: len(s.text))
    f2 = BooleanScorer(lambda s, c: "a" in s.text)
    exp = ExponentialScorer([f1, f2], [0.5, -2.0])
    xs = samples_of("a", "bb", "")
    assert torch.allclose(
        exp.log_score(xs), torch.tensor([0.5 - 2.0, 1.0, 0.0], dtype=torch.float64)
    )
    assert torch.allclose(exp.score(xs), exp.log_score(xs).exp())
    with pytest.raises(ValueError, match="2 features but 1"):
        ExponentialScorer([f1, f2], [1.0])
    with pytest.raises(ValueError, match="finite"):
        ExponentialScorer([f1], [math.nan])


def test_products_compose_and_flatten():
    base = EnumerableLM(seed=0)
    support, lp = base.enumerate_support()
    has_a = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")
    exp = ExponentialScorer([Scorer(lambda s, c: len(s.token_ids))], [0.3])
    ebm = base * has_a * exp
    assert isinstance(ebm, Product) and len(ebm.factors) == 3
    want = (
        lp
        + has_a.log_score(support)
        + 0.3 * torch.tensor([len(s.token_ids) for s in support], dtype=torch.float64)
    )
    got = ebm.log_score(support)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    assert torch.allclose(got[torch.isfinite(got)], want[torch.isfinite(want)], atol=1e-14)
    assert (has_a * base).factors[1] is base
    assert "has_a" in ebm.name


def test_product_refuses_bad_factors():
    with pytest.raises(TypeError, match="log_score"):
        Product(3)
    with pytest.raises(ValueError, match="at least one"):
        Product()

    class Broken:
        name = "broken"

        def log_score(self, samples, context=""):
            return torch.full((len(samples),), math.nan)

    with pytest.raises(ValueError, match="broken"):
        Product(Broken()).log_score(samples_of("a"))


# --- PipelineScorer with a small classification model (conftest's classifier_dir) ---------


def test_pipeline_scorer_matches_the_model(classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    texts = ["good film", "very bad film", "the", "a good a bad film very"]
    xs = samples_of(*texts)
    scorer = PipelineScorer(
        "POSITIVE", pipeline("text-classification", model=str(classifier_dir)), batch_size=3
    )
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    want = torch.log_softmax(logits.double(), -1)[:, 1]
    assert torch.allclose(scorer.log_score(xs), want, atol=1e-5)
    negative = PipelineScorer(0, model=model, tokenizer=tokenizer)
    total = scorer.score(xs) + negative.score(xs)
    assert torch.allclose(total, torch.ones(4, dtype=torch.float64), atol=1e-6)
    by_path = PipelineScorer("POSITIVE", str(classifier_dir))
    assert torch.allclose(by_path.log_score(xs), scorer.log_score(xs), atol=1e-6)
    assert scorer.name == "p(POSITIVE)"


def test_pipeline_scorer_errors(classifier_dir):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(classifier_dir))
    with pytest.raises(ValueError, match="not one of the model's labels"):
        PipelineScorer("NEUTRAL", pipe)
    with pytest.raises(ValueError, match="label index 5"):
        PipelineScorer(5, pipe)
    with pytest.raises(ValueError, match="needs a pipeline"):
        PipelineScorer("POSITIVE")


def test_pipeline_scorer_as_feature_in_an_ebm(classifier_dir):
    from transformers import pipeline

    scorer = PipelineScorer("POSITIVE", pipeline("text-classification", model=str(classifier_dir)))
    model = EnumerableLM(tokens=("good", "bad", "film"), max_length=3)
    support, lp = model.enumerate_support()
    ebm = model * ExponentialScorer([scorer], [1.5])
    got = ebm.log_score(support)
    assert np.allclose(got.numpy(), lp.numpy() + 1.5 * scorer.score(support).numpy(), atol=1e-12)
