"""Reading line-based files (JSONL above all) the way their writers meant the lines."""

from __future__ import annotations

from pathlib import Path


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, as `split_lines` cuts them. A file ending with "\\n" gives a last, empty
    line; callers skip blank lines. Read without universal newlines, which split at a lone "\\r", a character
    JSON allows between tokens."""
    with Path(path).open(encoding="utf-8", newline="") as file:
        return split_lines(file.read())


def split_lines(text: str) -> list[str]:
    """`text` split at "\\n" alone, each line without a trailing "\\r" (so CRLF files read as LF files).

    Not str.splitlines(): it also splits at U+2028, U+2029 and U+0085, which JSON allows unescaped inside
    strings, so one valid JSONL record (an answer holding a line separator, say) would come back as two broken
    lines.
    """
    return [line.removesuffix("\r") for line in text.split("\n")]
