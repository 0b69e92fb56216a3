"""Generation settings, seeds and quantization names: the plain values the web app validates without torch."""

import pytest

from training.generation.settings import GenerationRequest, GenerationSettings, checked_quantization, plan_answers


def test_it_refuses_bad_seeds_and_sample_counts_naming_them() -> None:
    request = GenerationRequest(key="q", messages=[{"role": "user", "content": "What is DPO?"}])

    with pytest.raises(ValueError, match=r"seed must be an integer from 0 to 2\*\*63 - 1, got -1"):
        plan_answers([request], seed=-1)
    with pytest.raises(ValueError, match=r"seed of request 'q' must be an integer from 0 to 2\*\*63 - 1"):
        plan_answers([request], seed=2**63 - 1, samples_per_prompt=2)
    with pytest.raises(ValueError, match="samples_per_prompt must be an integer of at least 1, got 0"):
        plan_answers([request], seed=0, samples_per_prompt=0)


def test_generation_settings_default_to_sampling_and_round_trip_through_a_dict() -> None:
    settings = GenerationSettings.from_dict({"max_new_tokens": 32, "temperature": 0, "top_p": 1})

    assert settings.to_dict() == {"max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0, "samples_per_prompt": 1}
    assert settings.greedy
    assert GenerationSettings.from_dict(settings.to_dict()) == settings
    defaults = GenerationSettings(max_new_tokens=96, temperature=0.7, top_p=0.95)
    assert GenerationSettings.from_dict({}) == defaults
    assert not GenerationSettings().greedy


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer from 1 to 8192, got 0"),
        ({"max_new_tokens": 12.5}, "max_new_tokens must be an integer"),
        ({"max_new_tokens": "96"}, "max_new_tokens must be an integer"),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer"),
        ({"temperature": -0.1}, r"temperature must be a number from 0 \(greedy\) to 5, got -0.1"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"temperature": float("nan")}, "temperature must be a number"),
        ({"top_p": 0}, "top_p must be a number greater than 0 and at most 1, got 0"),
        ({"top_p": 1.5}, "top_p must be a number greater than 0 and at most 1"),
        ({"samples_per_prompt": 0}, "samples_per_prompt must be an integer from 1 to 64, got 0"),
        ({"samples_per_prompt": 65}, "samples_per_prompt must be an integer from 1 to 64, got 65"),
        ({"samples_per_prompt": 2.0}, "samples_per_prompt must be an integer"),
        ({"top_k": 5}, r"unknown generation setting key\(s\): top_k; known: max_new_tokens, temperature, "),
    ],
)
def test_generation_settings_refuse_bad_values_naming_the_field(
    values: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationSettings.from_dict(values)


def test_generation_settings_refuse_a_non_mapping() -> None:
    with pytest.raises(ValueError, match="generation settings must be a mapping, got list"):
        GenerationSettings.from_dict([("temperature", 0.5)])  # type: ignore[arg-type]


def test_quantization_names_are_checked_naming_the_known_ones() -> None:
    assert checked_quantization("4bit") == "4bit"
    with pytest.raises(ValueError, match="quantization must be one of none, 4bit, 8bit, got '2bit'"):
        checked_quantization("2bit")
