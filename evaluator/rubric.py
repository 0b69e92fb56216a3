"""A campaign's rubric: the criteria annotators judge besides the overall preference (Campaign.criteria).

Admins write it as lines "Name: one-line definition"; it is stored as [{"slug", "label", "definition"}, …].
"""

import re

from django.utils.text import slugify

from evaluator.models import DEFAULT_CRITERIA, OVERALL

# With "overall" that is nine rows: the rating page's number keys 1–9 reach every one.
MAX_CRITERIA = 8
# Choices are stored under the slug (CriterionChoice.criterion holds 64 characters); an ASCII slug is never longer.
MAX_NAME = 64
# The default criteria keep their stored slugs when their names are written out again.
_DEFAULT_SLUGS = {criterion["label"].casefold(): criterion["slug"] for criterion in DEFAULT_CRITERIA}


def rubric_text(criteria: list[dict[str, str]]) -> str:
    """The criteria as the campaign form's lines."""
    return "\n".join(f"{criterion['label']}: {criterion['definition']}" for criterion in criteria)


def rubric_parse(text: str) -> tuple[list[dict[str, str]], list[str]]:
    """The criteria written as lines "Name: definition" (blank lines ignored), and the problems, each naming its
    line; the criteria are only usable when there are no problems."""
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    criteria = []
    for _, line in numbered:
        label, _, definition = (part.strip() for part in line.partition(":"))
        criteria.append({"slug": _slug(label), "label": label, "definition": definition})
    return criteria, _problems(criteria, [f"Line {number}" for number, _ in numbered])


def rubric_problems(criteria: object) -> list[str]:
    """What is wrong with a stored rubric (Campaign.criteria's JSON); empty when nothing is."""
    fields = ("slug", "label", "definition")
    if not isinstance(criteria, list) or not all(
        isinstance(item, dict) and all(isinstance(item.get(key), str) for key in fields) for item in criteria
    ):
        return ['The criteria must be a list of {"slug": …, "label": …, "definition": …}, all three text.']
    return _problems(criteria, [f"Criterion {number}" for number in range(1, len(criteria) + 1)])


def _slug(label: str) -> str:
    return _DEFAULT_SLUGS.get(label.casefold()) or slugify(label).replace("-", "_")


def _problems(criteria: list[dict[str, str]], places: list[str]) -> list[str]:
    """Why the criteria cannot be asked as they are, each problem prefixed with its criterion's place."""
    problems = []
    seen: set[str] = set()
    for place, criterion in zip(places, criteria, strict=True):
        label, slug, definition = criterion["label"], criterion["slug"], criterion["definition"]
        if not label:
            problems.append(f"{place}: the criterion has no name; write “Name: definition”.")
            continue
        if len(label) > MAX_NAME:
            problems.append(f"{place}: the name is {len(label)} characters long; at most {MAX_NAME} are allowed.")
        elif not slug:
            problems.append(f"{place}: “{label}” needs a letter or digit (a–z, 0–9) to be stored under.")
        elif not re.fullmatch(rf"[a-z0-9_]{{1,{MAX_NAME}}}", slug):
            problems.append(f"{place}: the slug “{slug}” may hold only a–z, 0–9 and _, at most {MAX_NAME}.")
        elif slug == OVERALL:
            problems.append(f"{place}: the overall preference is always asked; leave it out of the criteria.")
        elif slug in seen:
            problems.append(f"{place}: “{label}” repeats an earlier criterion (both are stored as “{slug}”).")
        seen.add(slug)
        if not definition:
            problems.append(f"{place}: “{label}” has no definition; add one after a colon: “{label}: …”.")
    if len(criteria) > MAX_CRITERIA:
        problems.append(f"{len(criteria)} criteria; at most {MAX_CRITERIA} (the overall preference comes on top).")
    return problems
