"""The DPO preference dataset of a campaign: which judgements become training pairs, and the files they go to.

Records are TRL's conversational preference format (training/preferences.py):
{"prompt": [{"role": "user", …}], "chosen": [{"role": "assistant", …}], "rejected": [{"role": "assistant", …}]}.
The selection rules are a `SelectionRules`; docs/formats.md describes them for researchers.
"""

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.models import OVERALL, Campaign, Comparison, CriterionChoice
from evaluator.selectors.campaigns import campaign_prompt_ids
from evaluator.selectors.judges import judge_outcomes_select, preference_dataset_metadata
from evaluator.selectors.review import adjudicated_outcomes
from training.preferences import write_jsonl

_SIGN = {"a": 1, "b": -1, "tie": 0}
_TEXT_BATCH = 2000


@dataclass(frozen=True)
class SelectionRules:
    """Which judgements make training pairs.

    - `criterion` decides (default "overall"), unless `weights` is given: then a judgement's score is
      Σ weight × (+1 when variant a won that criterion, −1 when b won, 0 for a tie); a positive score prefers a,
      a negative one b, zero is a tie. A criterion the judgement lacks counts 0.
    - `min_agreement` None: one record per decisive judgement. A number in (0, 1]: judgements are pooled per
      comparison; the comparison yields one record, for its majority, when the majority outcome is decisive,
      unique, and its share of the comparison's judgements is ≥ min_agreement.
    - Ties never make a record (they carry no preference); "both bad" is a tie. `drop_both_bad` also leaves out
      a judgement whose overall choice was "both bad" when `weights` would otherwise make it decisive.
    - `held_out_prompts`: prompt external ids whose comparisons never enter the dataset.
    - `include_gold`: gold items are left out unless True. `exclude_flagged`: judgements of flagged annotators
      are left out unless False. `include_simulated`: judgements of a scripted annotator (bench/loop.py) are
      left out unless True.
    - `judge_id`: None (the default) keeps the dataset human-only. A judge's id adds a record for each pair that
      judge found decisive in both orders alike on `criterion` and that no human record covers
      (evaluator.selectors.judges.judge_outcomes_select); the dataset's metadata then names the judge
      (preference_dataset_metadata). Not combined with `weights`.
    - `prefer_adjudicated`: where a researcher adjudicated a comparison's criterion, every judgement of that
      comparison counts the adjudicated outcome on it instead of its own (evaluator/selectors/review.py).
    """

    criterion: str = OVERALL
    weights: Mapping[str, float] | None = None
    min_agreement: float | None = None
    held_out_prompts: frozenset[str] = field(default_factory=frozenset)
    include_gold: bool = False
    exclude_flagged: bool = True
    drop_both_bad: bool = True
    include_simulated: bool = False
    judge_id: int | None = None
    prefer_adjudicated: bool = False

    def __post_init__(self) -> None:
        if self.judge_id is not None and self.weights is not None:
            raise ValueError("judge_id: a judge's verdicts are chosen on one criterion, not with weights")
        if not isinstance(self.criterion, str) or not self.criterion:
            raise ValueError(f"criterion must be a non-empty string, got {self.criterion!r}")
        if self.weights is not None:
            if not isinstance(self.weights, Mapping) or not self.weights:
                raise ValueError("weights must be a non-empty mapping of criterion to number")
            for name, weight in self.weights.items():
                if not isinstance(name, str) or not name:
                    raise ValueError(f"weights: criterion names must be non-empty strings, got {name!r}")
                if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                    raise ValueError(f"weights: the weight of {name!r} must be a finite number, got {weight!r}")
            if not any(self.weights.values()):
                raise ValueError("weights: at least one weight must be non-zero")
        if self.min_agreement is not None and (
            isinstance(self.min_agreement, bool)
            or not isinstance(self.min_agreement, int | float)
            or not 0 < self.min_agreement <= 1
        ):
            raise ValueError(f"min_agreement must be a number in (0, 1] or None, got {self.min_agreement!r}")
        object.__setattr__(self, "held_out_prompts", frozenset(self.held_out_prompts))

    @property
    def criterion_weights(self) -> dict[str, float]:
        return dict(self.weights) if self.weights is not None else {self.criterion: 1.0}


def preference_outcomes_select(*, campaign: Campaign, rules: SelectionRules) -> list[tuple[int, str]]:
    """(comparison id, winning side "a"/"b") for every record the rules make, in judgement (or comparison) order."""
    weights = rules.criterion_weights
    choices = CriterionChoice.objects.filter(
        judgement__comparison__campaign=campaign, criterion__in=[name for name, w in weights.items() if w]
    )
    if not rules.include_gold:
        choices = choices.filter(judgement__comparison__gold_outcome__isnull=True)
    if rules.exclude_flagged:
        choices = choices.filter(judgement__annotator__flag__isnull=True)
    if rules.drop_both_bad:
        both_bad = CriterionChoice.objects.filter(criterion=OVERALL, both_bad=True).values("judgement_id")
        choices = choices.exclude(judgement_id__in=both_bad)
    if not rules.include_simulated:
        choices = choices.filter(judgement__simulated=False)
    scores: dict[int, float] = defaultdict(float)
    comparison_of: dict[int, int] = {}
    # Held-out prompts are left out here rather than in the query: one `NOT IN` list of them would bind a
    # parameter each, past PostgreSQL's 65,535 on a large campaign (evaluator.batching).
    held_out = campaign_prompt_ids(campaign=campaign, external_ids=rules.held_out_prompts)
    rows = choices.order_by("judgement_id").values_list(
        "judgement_id", "judgement__comparison_id", "criterion", "outcome", "judgement__comparison__prompt_id"
    )
    decided = adjudicated_outcomes(campaign=campaign, criteria=weights) if rules.prefer_adjudicated else {}
    for judgement_id, comparison_id, criterion, outcome, prompt_id in rows.iterator(chunk_size=20_000):
        if prompt_id in held_out:
            continue
        outcome = decided.get((comparison_id, criterion), outcome)
        scores[judgement_id] += weights[criterion] * _SIGN[outcome]
        comparison_of[judgement_id] = comparison_id
    outcomes = [(comparison_of[pk], _side(score)) for pk, score in scores.items()]
    if rules.min_agreement is None:
        return [(comparison_id, side) for comparison_id, side in outcomes if side != "tie"]
    return _majorities(outcomes, rules.min_agreement)


def _side(score: float) -> str:
    return "a" if score > 0 else "b" if score < 0 else "tie"


def _majorities(outcomes: Iterable[tuple[int, str]], min_agreement: float) -> list[tuple[int, str]]:
    by_comparison: dict[int, Counter[str]] = defaultdict(Counter)
    for comparison_id, side in outcomes:
        by_comparison[comparison_id][side] += 1
    selected = []
    for comparison_id, counts in by_comparison.items():
        ranked = counts.most_common()
        side, votes = ranked[0]
        if len(ranked) > 1 and ranked[1][1] == votes:
            continue  # no unique majority
        if side == "tie" or votes / counts.total() < min_agreement:
            continue
        selected.append((comparison_id, side))
    return selected


def preference_records_select(*, campaign: Campaign, rules: SelectionRules | None = None) -> list[dict[str, Any]]:
    """The campaign's TRL conversational preference records under `rules` (default: overall, one record per
    decisive judgement, no gold items, no flagged annotators)."""
    rules = rules or SelectionRules()
    selected = preference_outcomes_select(campaign=campaign, rules=rules)
    if rules.judge_id is not None:  # only on request: verdicts of a judge are no human's
        selected += judge_outcomes_select(
            campaign=campaign,
            judge_id=rules.judge_id,
            criterion=rules.criterion,
            held_out_prompts=rules.held_out_prompts,
            include_gold=rules.include_gold,
            exclude={pk for pk, _ in selected},
        )
    texts = _comparison_texts(sorted({comparison_id for comparison_id, _ in selected}))
    records = []
    for comparison_id, side in selected:
        prompt, answer_a, answer_b = texts[comparison_id]
        chosen, rejected = (answer_a, answer_b) if side == "a" else (answer_b, answer_a)
        records.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return records


def _comparison_texts(ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
    texts: dict[int, tuple[str, str, str]] = {}
    for start in range(0, len(ids), _TEXT_BATCH):
        rows = Comparison.objects.filter(pk__in=ids[start : start + _TEXT_BATCH]).values_list(
            "pk", "prompt__text", "candidate_a__text", "candidate_b__text"
        )
        texts.update((pk, (prompt, a, b)) for pk, prompt, a, b in rows)
    return texts


def dpo_jsonl_write(records: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """Write the records as TRL preference JSONL (atomically, see training.preferences.write_jsonl)."""
    write_jsonl(records, Path(path))
    return Path(path)


def dpo_hf_write(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write the records as a Hugging Face `datasets` folder, readable with `datasets.load_from_disk(path)`."""
    from datasets import Dataset

    if not records:
        raise ValueError("no preference records to write")
    Dataset.from_list([dict(record) for record in records]).save_to_disk(str(path))
    return Path(path)


def held_out_prompts_read(path: Path) -> frozenset[str]:
    """Prompt external ids from a text file, one a line; blank lines and lines starting with # are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


# Beside a JSONL file PATH the metadata is PATH + this suffix; inside a Hugging Face folder it is this file.
METADATA_SUFFIX = ".metadata.json"
HF_METADATA_NAME = "prefloop_metadata.json"


def dpo_metadata(*, campaign: Campaign, rules: SelectionRules, records: int) -> dict[str, Any]:
    """What a DPO dataset was made from (docs/formats.md): the campaign, the selection rules, how many records, and
    its sources: the human judgements, and the judge (id, name, kind, model) when the rules asked for one."""
    return {
        "campaign": {"id": campaign.pk, "name": campaign.name},
        "records": records,
        "rules": {
            "criterion": rules.criterion,
            "weights": dict(rules.weights) if rules.weights is not None else None,
            "min_agreement": rules.min_agreement,
            "held_out_prompts": len(rules.held_out_prompts),
            "include_gold": rules.include_gold,
            "exclude_flagged": rules.exclude_flagged,
            "drop_both_bad": rules.drop_both_bad,
            "include_simulated": rules.include_simulated,
            "prefer_adjudicated": rules.prefer_adjudicated,
            "judge_id": rules.judge_id,
        },
        "sources": preference_dataset_metadata(judge_id=rules.judge_id),
    }


def dpo_metadata_path(path: Path, file_format: str) -> Path:
    """Where the metadata of a dataset written to `path` goes: beside a JSONL file, inside a `datasets` folder."""
    path = Path(path)
    return path / HF_METADATA_NAME if file_format == "hf" else path.with_name(path.name + METADATA_SUFFIX)


def dpo_metadata_write(metadata: Mapping[str, Any], path: Path) -> Path:
    """Write the metadata as indented JSON, beside the target and renamed (complete or absent)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path
