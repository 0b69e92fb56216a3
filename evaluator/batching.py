"""Statements that stay under the database's bound-parameter limit however many rows a file or campaign has.

PostgreSQL binds at most 65,535 parameters a statement (psycopg 3 with server-side binding sends them as such: a
16-bit count in the wire protocol) and SQLite 32,766; Django passes an `__in` list as one parameter a value and
a plain bulk insert as one a field a row. Lookups by many keys are therefore run a batch of keys at a time, and
bulk writes take `WRITE_BATCH` rows a statement.
"""

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# Keys in one `IN (...)` list: well under either limit, leaving room for the statement's other parameters.
IN_BATCH = 10_000
# Rows in one bulk INSERT or UPDATE: a row binds one parameter a column, and the widest table has under 20.
WRITE_BATCH = 2_000


def batched(values: Iterable[T], size: int = IN_BATCH) -> Iterator[list[T]]:
    """`values` in lists of at most `size`, in order (itertools.batched arrives with Python 3.12)."""
    iterator = iter(values)
    while batch := list(islice(iterator, size)):
        yield batch
