"""Functions the tests name by import path ("feature_helpers:...")."""


def starts_with_good(sample, context):
    return sample.text.startswith("good")


def word_count(sample, context):
    return len(sample.text.split())
