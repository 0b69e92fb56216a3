import random

import pytest

from evaluator.errors import ServiceError
from evaluator.models import Assignment, CriterionChoice, Judgement
from evaluator.selectors.campaigns import VoteFilters, campaign_statistics, votes_frame
from evaluator.selectors.training import round_results
from evaluator.services.rating import side_to_outcome
from evaluator.services.simulation import (
    COMPLETE,
    DEFAULT_RULE,
    KEY_TERM,
    key_term,
    mentions,
    oracle_preference,
    oracle_reason,
    repeats,
    simulated_round_rate,
    stem,
)
from tests import factories

# The default rule: repeated words ---------------------------------------------------------------------------

PROMPT = "What is a museum accession number?"


def test_the_default_rule_is_the_repetition_rule() -> None:
    assert DEFAULT_RULE == "repetition"


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        ("Light fades dyes.", 0),
        ("the cat saw the cat", 2),
        # Case and punctuation do not hide a repeat; stop words count like any word.
        ("The light. THE light!", 2),
        ("a a a a", 3),
        ("", 0),
    ],
)
def test_repeated_words_are_the_words_that_repeat_an_earlier_word_of_the_answer(answer: str, count: int) -> None:
    assert repeats(answer) == count


@pytest.mark.parametrize(
    ("left", "right", "side"),
    [
        ("Light fades dyes and weakens paper.", "The light fades and the light fades.", "left"),
        ("Light fades light fades light.", "Humidity cracks wood.", "right"),
        # Fewer repeats win even over a finished sentence: the first step decides.
        ("Light fades dyes and", "Light fades dyes and light fades them.", "left"),
    ],
)
def test_the_repetition_rule_prefers_the_answer_with_fewer_repeated_words(left: str, right: str, side: str) -> None:
    assert oracle_preference(PROMPT, left, right) == side
    assert oracle_reason(PROMPT, left, right) == "repeated words"


@pytest.mark.parametrize(
    ("left", "right", "side", "reason"),
    [
        ("Light fades dyes.", "Humidity cracks wood and", "left", "finished sentence"),
        ("Light fades the dye and the", "Humidity cracks the wood and the pots!", "right", "finished sentence"),
        ("Light fades dyes.", "Humidity cracks wood.", "tie", "tie"),
        ("Light fades dyes and", "Humidity cracks", "tie", "tie"),
    ],
)
def test_with_as_many_repeated_words_the_finished_sentence_wins_and_else_it_is_a_tie(
    left: str, right: str, side: str, reason: str
) -> None:
    assert oracle_preference(PROMPT, left, right) == side
    assert oracle_reason(PROMPT, left, right) == reason


def test_the_repetition_rule_ignores_the_key_term() -> None:
    # The right answer mentions "accession" but repeats itself; the key-term rule would pick it.
    left, right = "Light fades dyes.", "An accession number is an accession code."
    assert oracle_preference(PROMPT, left, right) == "left"
    assert oracle_preference(PROMPT, left, right, rule=KEY_TERM) == "right"


def test_an_unknown_rule_is_refused_by_name() -> None:
    with pytest.raises(ServiceError, match="rule must be one of repetition, key-term, complete, got 'longest'"):
        oracle_preference(PROMPT, "A.", "B.", rule="longest")


# The key-term rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        ("What is a museum accession number?", "accession"),
        ("Why are archives digitised?", "digitised"),
        ("What does a conservator do?", "conservator"),
        # "difference" and "restoration" lose to the longer "conservation".
        ("What is the difference between conservation and restoration?", "conservation"),
        # Equally long content words: the first one wins.
        ("Compare parchment with textiles.", "parchment"),
    ],
)
def test_the_key_term_is_the_prompts_first_longest_content_word(prompt: str, term: str) -> None:
    assert key_term(prompt) == term


def test_a_prompt_of_stop_words_and_short_words_has_no_key_term() -> None:
    assert key_term("Why is it so? Tell me about it.") is None


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("archives", "archiv"),
        ("archive", "archiv"),
        ("digitised", "digitis"),
        ("digitising", "digitis"),
        ("galleries", "gallery"),
        ("gallery", "gallery"),
        ("classes", "class"),
        ("class", "class"),
        ("uses", "uses"),
    ],
)
def test_the_stem_strips_one_common_suffix_and_a_final_e(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_an_inflected_form_of_the_key_term_counts_as_a_mention() -> None:
    assert mentions("Digitising keeps fragile records usable.", "digitised")
    assert mentions("The Archive keeps them.", "archives")
    assert not mentions("Scanning keeps fragile records usable.", "digitised")


@pytest.mark.parametrize(
    ("left", "right", "side"),
    [
        ("An accession number links an object to its records.", "Light fades dyes.", "left"),
        ("Light fades dyes.", "Accession numbers are unique codes.", "right"),
        ("An accession number.", "Accessions are recorded.", "tie"),
        ("Light fades dyes.", "Humidity cracks wood.", "tie"),
    ],
)
def test_the_oracle_prefers_the_answer_that_mentions_the_key_term_and_ties_otherwise(
    left: str, right: str, side: str
) -> None:
    assert oracle_preference("What is a museum accession number?", left, right, rule=KEY_TERM) == side


@pytest.mark.parametrize(
    ("left", "right", "side"),
    [
        ("Light fades dyes.", "Light fades dyes and", "left"),
        ("An accession number links", "Accession numbers are unique codes!", "right"),
        ("Light fades dyes and", "Humidity cracks", "tie"),
    ],
)
def test_when_the_key_term_does_not_decide_the_answer_that_ends_as_a_finished_sentence_wins(
    left: str, right: str, side: str
) -> None:
    assert oracle_preference("What is a museum accession number?", left, right, rule=KEY_TERM) == side


def test_the_key_term_outranks_a_finished_sentence() -> None:
    prompt = "What is a museum accession number?"
    assert oracle_preference(prompt, "Light fades dyes.", "An accession number links", rule=KEY_TERM) == "right"
    assert oracle_reason(prompt, "Light fades dyes.", "An accession number links", rule=KEY_TERM) == "key term"
    assert oracle_reason(prompt, "Light fades dyes.", "Light fades", rule=KEY_TERM) == "finished sentence"
    assert oracle_reason(prompt, "Light fades dyes.", "Humidity cracks wood.", rule=KEY_TERM) == "tie"


def test_the_key_term_rule_does_not_count_repeated_words() -> None:
    prompt = "What is a museum accession number?"
    left, right = "Light fades the dye and the paper.", "Humidity cracks wood."
    assert oracle_preference(prompt, left, right, rule=KEY_TERM) == "tie"
    assert oracle_preference(prompt, left, right) == "right"


def test_a_prompt_without_a_key_term_is_decided_by_finished_sentences_alone() -> None:
    assert oracle_preference("Why is it so?", "It is so", "It is so.", rule=KEY_TERM) == "right"
    assert oracle_preference("Why is it so?", "It is so.", "It is not.", rule=KEY_TERM) == "tie"


# Rating through the assignment engine ----------------------------------------------------------------------

# Candidate a repeats itself and mentions the key term; candidate b does neither. Both are finished sentences.
REPEATS_AND_MENTIONS = "Digitised archives and digitised records reach the readers of the archives."
CLEAN_AND_MISSES = "Light fades dyes and weakens paper."


def _campaign_with_pairs(count: int, overlap: int = 2):
    campaign = factories.campaign(overlap=overlap)
    first, second = factories.variant(), factories.variant()
    texts = (REPEATS_AND_MENTIONS, CLEAN_AND_MISSES)
    comparisons = [factories.comparison(campaign, variants=(first, second), texts=texts) for _ in range(count)]
    for comparison in comparisons:
        comparison.prompt.text = "Why are archives digitised?"
        comparison.prompt.save(update_fields=["text"])
    return campaign, comparisons, (first, second)


@pytest.mark.django_db
def test_scripted_annotators_rate_every_open_comparison_k_times_and_flag_each_judgement_simulated(
    annotator, second_annotator
) -> None:
    campaign, _, _ = _campaign_with_pairs(3, overlap=2)
    stored = simulated_round_rate(campaign=campaign, annotators=[annotator, second_annotator])
    assert stored == 6
    assert Judgement.objects.filter(simulated=True).count() == 6
    assert not Judgement.objects.filter(simulated=False).exists()
    assert not Assignment.objects.filter(completed_at__isnull=True).exists()
    # Candidate b has fewer repeated words, whichever side it was shown on: every criterion is stored as b.
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {"b"}
    assert CriterionChoice.objects.count() == 6 * len(campaign.criterion_slugs)
    assert set(Judgement.objects.values_list("rationale", flat=True)) == {"Simulated: decided by repeated words."}
    # Nothing is left for them: a second pass rates nothing.
    assert simulated_round_rate(campaign=campaign, annotators=[annotator, second_annotator]) == 0


@pytest.mark.django_db
def test_scripted_annotators_follow_the_key_term_rule_when_named(annotator) -> None:
    campaign, _, _ = _campaign_with_pairs(3, overlap=1)
    assert simulated_round_rate(campaign=campaign, annotators=[annotator], rule=KEY_TERM) == 3
    # Candidate a mentions "digitised", the prompt's key term, so it wins however much it repeats itself.
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {"a"}
    assert set(Judgement.objects.values_list("rationale", flat=True)) == {"Simulated: decided by key term."}
    assert Judgement.objects.filter(simulated=True).count() == 3


@pytest.mark.django_db
def test_simulated_judgements_are_left_out_of_statistics_and_round_results_unless_asked_for(
    annotator, second_annotator
) -> None:
    campaign, comparisons, (first, second) = _campaign_with_pairs(4, overlap=1)
    person = factories.user("pat", "annotator")
    factories.judgement(comparisons[0], person, "a")
    second.parent = first
    second.save(update_fields=["parent"])
    simulated_round_rate(campaign=campaign, annotators=[annotator])

    default_votes = votes_frame(campaign=campaign)
    assert set(default_votes["annotator_id"]) == {person.pk}
    all_votes = votes_frame(campaign=campaign, filters=VoteFilters(include_simulated=True))
    assert set(all_votes["annotator_id"]) == {person.pk, annotator.pk}
    assert campaign_statistics(campaign=campaign, n_boot=10).n_votes == 1  # the person's judgement
    # The child (second) won the three simulated judgements and lost the person's one.
    assert round_results()[second.pk].judgements == 1
    counted = round_results(include_simulated=True)[second.pk]
    assert (counted.wins, counted.ties, counted.losses) == (3, 0, 1)


@pytest.mark.django_db
def test_a_pair_of_another_campaign_is_skipped_and_left_for_people(annotator) -> None:
    older, _, _ = _campaign_with_pairs(1, overlap=1)
    newer, _, _ = _campaign_with_pairs(2, overlap=1)
    assert simulated_round_rate(campaign=newer, annotators=[annotator]) == 2
    older_assignment = Assignment.objects.get(comparison__campaign=older)
    assert older_assignment.skipped_at is not None
    assert older_assignment.released
    assert not Judgement.objects.filter(comparison__campaign=older).exists()


@pytest.mark.django_db
def test_noise_replaces_the_rule_by_a_draw_that_the_seed_decides(annotator) -> None:
    campaign, _, _ = _campaign_with_pairs(30, overlap=1)
    simulated_round_rate(campaign=campaign, annotators=[annotator], noise=1.0, seed=7)
    choices = CriterionChoice.objects.filter(criterion="overall").select_related("judgement__assignment")
    assert {choice.outcome for choice in choices} == {"a", "b", "tie"}
    for choice in choices:
        draw = random.Random(f"7:{annotator.pk}:{choice.judgement.comparison_id}")
        draw.random()
        side = draw.choice(("left", "right", "tie"))
        expected = side_to_outcome(side, left_is_a=choice.judgement.assignment.left_is_a)
        assert choice.outcome == expected
    assert set(Judgement.objects.values_list("rationale", flat=True)) == {"Simulated: a random choice (noise)."}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"annotators": []}, "at least one scripted annotator"),
        ({"noise": 1.5}, "noise must be a share from 0 to 1"),
        ({"noise": True}, "noise must be a share from 0 to 1"),
        ({"rule": "longest"}, "rule must be one of repetition, key-term"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_rated(annotator, kwargs, message) -> None:
    campaign, _, _ = _campaign_with_pairs(1)
    with pytest.raises(ServiceError, match=message):
        simulated_round_rate(campaign=campaign, **{"annotators": [annotator], **kwargs})
    assert not Assignment.objects.exists()


@pytest.mark.django_db
def test_naming_one_annotator_twice_is_refused(annotator) -> None:
    campaign, _, _ = _campaign_with_pairs(1)
    with pytest.raises(ServiceError, match="only once"):
        simulated_round_rate(campaign=campaign, annotators=[annotator, annotator])
    assert not Judgement.objects.exists()


# The complete rule: a finished sentence, else a tie -----------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "side", "reason"),
    [
        # A finished answer beats one cut off, even with more repeated words.
        ("The light fades and the light fades.", "Light fades dyes and", "left", "finished sentence"),
        ("Humidity cracks", "Humidity cracks wood.", "right", "finished sentence"),
        # Both finished, or both cut off: a tie, whatever their repeated words.
        ("Light fades dyes.", "The light fades the dyes.", "tie", "tie"),
        ("the cat saw the cat and", "Light fades dyes and", "tie", "tie"),
    ],
)
def test_the_complete_rule_prefers_the_finished_answer_and_otherwise_calls_a_tie(
    left: str, right: str, side: str, reason: str
) -> None:
    assert oracle_preference(PROMPT, left, right, rule=COMPLETE) == side
    assert oracle_reason(PROMPT, left, right, rule=COMPLETE) == reason
