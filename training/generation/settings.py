"""How answers are generated, what a request and an answer are, and which seed each answer gets: plain
dataclasses and constants that the web app imports to validate settings, without torch."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from training.validation import check_known_keys, is_int, is_number

Quantization = Literal["none", "4bit", "8bit"]
QUANTIZATIONS: tuple[Quantization, ...] = get_args(Quantization)

MAX_NEW_TOKENS_LIMIT = 8192
TEMPERATURE_LIMIT = 5.0
# The web app spaces candidate seeds this far apart (evaluator.services.generation.candidate_seed).
SAMPLES_PER_PROMPT_LIMIT = 64
# Seeds are stored with each answer in a signed 64-bit column.
SEED_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class GenerationSettings:
    """How a variant answers. The first three values alone decide how an answer is decoded: the model's own
    defaults (top_k, repetition penalty) are switched off so that a stored settings record reproduces its
    answers. Temperature 0 means greedy. samples_per_prompt is how many answers each prompt gets."""

    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.95
    samples_per_prompt: int = 1

    def __post_init__(self) -> None:
        if not is_int(self.max_new_tokens) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            expected = f"an integer from 1 to {MAX_NEW_TOKENS_LIMIT}"
            raise ValueError(f"max_new_tokens must be {expected}, got {self.max_new_tokens!r}")
        if not is_number(self.temperature) or not 0 <= self.temperature <= TEMPERATURE_LIMIT:
            expected = f"a number from 0 (greedy) to {TEMPERATURE_LIMIT:g}"
            raise ValueError(f"temperature must be {expected}, got {self.temperature!r}")
        if not is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number greater than 0 and at most 1, got {self.top_p!r}")
        if not is_int(self.samples_per_prompt) or not 1 <= self.samples_per_prompt <= SAMPLES_PER_PROMPT_LIMIT:
            expected = f"an integer from 1 to {SAMPLES_PER_PROMPT_LIMIT}"
            raise ValueError(f"samples_per_prompt must be {expected}, got {self.samples_per_prompt!r}")
        # Integers are accepted for the float fields (a form or YAML may give 1 for 1.0); store them as floats
        # so to_dict() is the same whichever was given.
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationSettings:
        """Settings from a plain mapping; missing keys take their defaults, unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError(f"generation settings must be a mapping, got {type(data).__name__}")
        check_known_keys("generation setting", data, cls)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationRequest:
    """One chat to answer; `key` comes back on its results. `messages` is the whole chat, including any context
    the caller adds (retrieved passages, a system prompt). `seed`, when given, fixes the seed of the request's
    first sample (the next samples take the following seeds): set it to a stored seed to reproduce an answer."""

    key: str
    messages: list[dict[str, str]]
    seed: int | None = None


@dataclass(frozen=True)
class GeneratedText:
    """One answer. Token counts exclude padding; completion_tokens includes the end-of-turn token when the
    model produced one. latency_ms is the wall time of the whole batch the answer was generated in. seed is the
    answer's own seed: the request answered alone with that seed and the same settings gives the same text."""

    key: str
    sample_index: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    seed: int


@dataclass(frozen=True)
class PlannedAnswer:
    """One answer to generate: which request, which of its samples, and the seed it is sampled with."""

    request_index: int
    sample_index: int
    seed: int


def plan_answers(
    requests: Sequence[GenerationRequest], *, seed: int, samples_per_prompt: int = 1
) -> list[PlannedAnswer]:
    """Every answer to generate, request by request, sample by sample. A request without a seed of its own
    takes `seed + its index × samples_per_prompt`, so the answers of one call all get different seeds."""
    if not is_int(samples_per_prompt) or samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be an integer of at least 1, got {samples_per_prompt!r}")
    check_seed("seed", seed)
    planned: list[PlannedAnswer] = []
    for index, request in enumerate(requests):
        if request.seed is not None:
            check_seed(f"seed of request {request.key!r}", request.seed)
        first = request.seed if request.seed is not None else seed + index * samples_per_prompt
        check_seed(f"seed of request {request.key!r}", first + samples_per_prompt - 1)
        planned.extend(PlannedAnswer(index, sample, first + sample) for sample in range(samples_per_prompt))
    return planned


def plan_variants(
    requests_by_variant: Mapping[str, Sequence[GenerationRequest]],
    settings_by_variant: Mapping[str, GenerationSettings],
    *,
    loaded: Collection[str],
    seed: int,
    samples_per_prompt: int | None = None,
) -> dict[str, list[PlannedAnswer]]:
    """plan_answers for each variant: its settings' samples_per_prompt answers to every request, unless
    `samples_per_prompt` overrides that for all. Refuses, before anything is generated, a variant that is not
    among the `loaded` ones or has no settings, and a seed out of range."""
    unknown = [variant for variant in requests_by_variant if variant not in loaded]
    if unknown:
        raise ValueError(f"no adapter loaded for variant(s) {', '.join(map(repr, unknown))}; loaded: {sorted(loaded)}")
    unset = [variant for variant in requests_by_variant if variant not in settings_by_variant]
    if unset:
        raise ValueError(f"no generation settings for variant(s) {', '.join(map(repr, unset))}")
    return {
        variant: plan_answers(
            requests,
            seed=seed,
            samples_per_prompt=(
                settings_by_variant[variant].samples_per_prompt if samples_per_prompt is None else samples_per_prompt
            ),
        )
        for variant, requests in requests_by_variant.items()
    }


def check_seed(name: str, value: object) -> None:
    if not is_int(value) or not 0 <= value <= SEED_LIMIT:
        raise ValueError(f"{name} must be an integer from 0 to 2**63 - 1, got {value!r}")


def checked_quantization(value: object) -> Quantization:
    """`value` once it is known to be a quantization name; else a ValueError naming the known ones."""
    for name in QUANTIZATIONS:
        if value == name:
            return name
    raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {value!r}")
