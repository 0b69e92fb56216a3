"""A scripted annotator: documented, deterministic preference rules and a pass that rates through the real engine.

`oracle_preference` applies one of three rules (RULES), the "repetition" rule by default:

- **repetition** (DEFAULT_RULE), a rule one DPO round can teach even a tiny model on prompts it never saw:

  1. The answer with fewer *repeated words* wins. An answer's repeated words (`repeats`) are its words (runs of
     letters, lowercased, stop words included) that are the same as an earlier word of the same answer: "the
     cat saw the cat" has two.
  2. When both have as many, the answer that ends as a finished sentence (its last character is ".", "!" or
     "?", as opposed to an answer cut off mid-sentence) wins; when that does not decide either, it is a tie.

- **key-term**, for prompts whose key term a model can learn to mention:

  1. The prompt's *key term* is its longest content word: the text is lowercased and split into runs of letters,
     stop words (STOP_WORDS) and words under three letters are dropped, and of the longest words left the first
     wins. A prompt without a content word has no key term: its pairs go straight to step 3.
  2. An answer *mentions* the key term when one of its words has the same stem, by a simple rule (`stem`): a
     trailing "ies" becomes "y"; else a trailing "ing", "ed", "es" or "s" (but not the "s" of "ss") is dropped
     when at least four letters remain; then a trailing "e" is dropped. So "digitised", "digitising" and
     "digitise" all mention "digitise", and "archive" mentions "archives".
  3. The answer that mentions the key term wins. When both or neither do, the finished sentence decides as in
     the repetition rule's step 2; else it is a tie.

- **complete**, a formatting-quality rule for real instruct models, whose answers are sensible but often run past
  the reply budget (max_new_tokens) and are cut off mid-sentence: the answer that ends as a finished sentence
  wins over one that was cut off; when both or neither are finished, it is a tie. (A tie-break on repeated words
  was tried and dropped: between two sensible answers of a real model it is noise, and it drowned the signal.)

`oracle_reason` says which step decided ("repeated words", "key term", "finished sentence" or "tie"). The same
choice is given for every criterion of the campaign and for overall. `simulated_round_rate` makes scripted
annotator accounts rate a campaign's open comparisons through `assignment_next` and `judgement_submit` (blind
sides, leases, the k cap: all as for people) and flags each judgement `simulated` in the transaction that stores
it, so statistics, datasets and round results leave them out unless asked to count them.
"""

import random
import re
from collections.abc import Sequence
from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import Assignment, Campaign, Judgement
from evaluator.services.rating import assignment_next, assignment_skip, judgement_submit

Side = str  # "left", "right" or "tie"

_STOP_WORDS_TEXT = """
    about above after again against all also although among and any are because been before being
    below between both but can cannot could did does doing done down during each either else ever every few
    for from further had has have having her here hers herself him himself his how however into its itself
    just least less let like made make makes many may might more most much must myself near need needs neither
    never nor not now off often once one only onto other others otherwise our ours ourselves out over own
    per perhaps please quite rather really same see seen several shall she should since some something still
    such than that the their theirs them themselves then there therefore these they thing things this those
    though through thus too toward towards under until upon use used uses using very via was way ways well
    were what whatever when where whether which while who whom whose why will with within without would yet
    you your yours yourself yourselves explain describe tell give show mean means meant work works
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
MIN_WORD_LENGTH = 3
SENTENCE_ENDS = (".", "!", "?")
SKIP_REASON = "Scripted annotator: rates only the campaign it was run for."
REPETITION, KEY_TERM, COMPLETE = "repetition", "key-term", "complete"
RULES = (REPETITION, KEY_TERM, COMPLETE)
REPEATED_WORDS, KEY_TERM_STEP, FINISHED_SENTENCE, TIE = "repeated words", "key term", "finished sentence", "tie"
# Each rule's steps in order: the first that tells the two answers apart decides.
RULE_STEPS = {
    REPETITION: (REPEATED_WORDS, FINISHED_SENTENCE),
    KEY_TERM: (KEY_TERM_STEP, FINISHED_SENTENCE),
    COMPLETE: (FINISHED_SENTENCE,),
}
DEFAULT_RULE = REPETITION
_WORD = re.compile(r"[a-z]+")


def content_words(text: str) -> list[str]:
    """The text's lowercased words, in order, without stop words and words under three letters."""
    return [word for word in _WORD.findall(text.lower()) if len(word) >= MIN_WORD_LENGTH and word not in STOP_WORDS]


def key_term(prompt: str) -> str | None:
    """The prompt's longest content word (the first of equally long ones); None when it has none."""
    words = content_words(prompt)
    return max(words, key=len) if words else None


def stem(word: str) -> str:
    """A crude suffix-stripping stem, enough to match "archive" with "archives" and "digitise" with "digitised"."""
    word = word.lower()
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def mentions(answer: str, term: str) -> bool:
    """Whether one of the answer's words has the term's stem."""
    wanted = stem(term)
    return any(stem(word) == wanted for word in _WORD.findall(answer.lower()))


def finished(answer: str) -> bool:
    """Whether the answer ends as a finished sentence rather than being cut off."""
    return answer.rstrip().endswith(SENTENCE_ENDS)


def repeats(answer: str) -> int:
    """How many of the answer's words (stop words included) repeat an earlier word of the answer."""
    words = _WORD.findall(answer.lower())
    return len(words) - len(set(words))


def check_rule(rule: str) -> None:
    """Refuse a rule name that is not one of RULES."""
    if rule not in RULES:
        raise ServiceError(f"rule must be one of {', '.join(RULES)}, got {rule!r}.")


def oracle_reason(prompt: str, left: str, right: str, *, rule: str = DEFAULT_RULE) -> str:
    """Which step of `rule` decides: "repeated words", "key term", "finished sentence", or "tie"."""
    check_rule(rule)
    for step in RULE_STEPS[rule]:
        if _step_winner(step, prompt, left, right) is not None:
            return step
    return TIE


def oracle_preference(prompt: str, left: str, right: str, *, rule: str = DEFAULT_RULE) -> Side:
    """The scripted annotator's choice between two answers to `prompt` by `rule`. By default (repetition): the
    answer with fewer repeated words; failing that, the one that ends as a finished sentence; failing that, a
    tie. The rules in full are in this module's docstring."""
    check_rule(rule)
    for step in RULE_STEPS[rule]:
        side = _step_winner(step, prompt, left, right)
        if side is not None:
            return side
    return "tie"


def _step_winner(step: str, prompt: str, left: str, right: str) -> Side | None:
    """The side one step of a rule prefers, or None when the step does not tell the two answers apart."""
    if step == REPEATED_WORDS:
        left_score, right_score = -repeats(left), -repeats(right)
    elif step == FINISHED_SENTENCE:
        left_score, right_score = int(finished(left)), int(finished(right))
    else:
        term = key_term(prompt)
        if term is None:
            return None
        left_score, right_score = int(mentions(left, term)), int(mentions(right, term))
    if left_score == right_score:
        return None
    return "left" if left_score > right_score else "right"


def simulated_round_rate(
    *,
    campaign: Campaign,
    annotators: Sequence[User],
    rule: str = DEFAULT_RULE,
    noise: float = 0.0,
    seed: int = 0,
    now: datetime | None = None,
) -> int:
    """Have each scripted annotator rate every comparison the engine hands it in `campaign`; returns how many
    judgements were stored.

    Each annotator claims pairs with `assignment_next` until none is left for it and answers each with
    `oracle_preference` by `rule` on the sides it was shown. With probability `noise` an annotator answers left,
    right or tie at random instead (seeded by `seed`, the annotator and the comparison, so a rerun repeats it). Every
    judgement is flagged `simulated` in the transaction that stores it. A pair of another campaign handed to a
    scripted annotator is skipped (its slot goes straight back to the pool), never rated.
    """
    if not annotators:
        raise ServiceError("Name at least one scripted annotator.")
    check_rule(rule)
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise <= 1:
        raise ServiceError(f"noise must be a share from 0 to 1, got {noise!r}.")
    if len({annotator.pk for annotator in annotators}) != len(annotators):
        raise ServiceError("Each scripted annotator may be named only once.")
    stored = 0
    for annotator in annotators:
        while True:
            assignment = assignment_next(annotator=annotator, now=now)
            if assignment is None:
                break
            if assignment.comparison.campaign_id != campaign.pk:
                assignment_skip(token=str(assignment.token), annotator=annotator, reason=SKIP_REASON, now=now)
                continue
            _rate(assignment, annotator, rule=rule, noise=noise, seed=seed, now=now)
            stored += 1
    return stored


def _rate(
    assignment: Assignment,
    annotator: User,
    *,
    rule: str,
    noise: float,
    seed: int,
    now: datetime | None,
) -> None:
    comparison = assignment.comparison
    shown_a, shown_b = comparison.candidate_a.text, comparison.candidate_b.text
    left, right = (shown_a, shown_b) if assignment.left_is_a else (shown_b, shown_a)
    side = oracle_preference(comparison.prompt.text, left, right, rule=rule)
    rationale = f"Simulated: decided by {oracle_reason(comparison.prompt.text, left, right, rule=rule)}."
    # A string seed hashes the same in every process: a rerun draws the same noise for the same judgement.
    draw = random.Random(f"{seed}:{annotator.pk}:{comparison.pk}")  # noqa: S311 - simulation, not a secret
    if draw.random() < noise:
        side = draw.choice(("left", "right", "tie"))
        rationale = "Simulated: a random choice (noise)."
    choices = dict.fromkeys(comparison.campaign.criterion_slugs, side)
    with transaction.atomic():
        judgement = judgement_submit(
            token=str(assignment.token),
            annotator=annotator,
            choices=choices,
            rationale=rationale,
            now=now or timezone.now(),
        )
        Judgement.objects.filter(pk=judgement.pk).update(simulated=True)
