"""Line numbers for keys of a TOML document, so configuration errors can point at them.

``tomllib`` parses strictly but forgets positions. This scanner reads the text once more and
records the line of every table header, key and (string or number) array element, addressed
by the same path the parsed data uses: ``("targets", 1, "duration")`` is the ``duration`` key
of the second ``[[targets]]`` table; ``("slos", 2)`` the third element of ``slos``. It only
needs to be good enough to point a human at the right line: a path it cannot place falls back
to its nearest placed parent.
"""

from __future__ import annotations

import re

__all__ = ["Locator"]

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=\s*(.*)$""")
_INLINE_KEY = re.compile(r"""("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")
_ELEMENT = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'|[-+]?[0-9][0-9_.eE+-]*|true|false""")


def _key_parts(raw: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in raw.split("."))


class Locator:
    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        counts: dict[tuple[str, ...], int] = {}
        table: Path = ()
        array_path: Path | None = None
        array_index = 0
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.split("#", 1)[0] if '"' not in line and "'" not in line else line
            if array_path is not None:
                array_index = self._elements(stripped, array_path, array_index, number)
                if "]" in stripped.split("#", 1)[0]:
                    array_path = None
                continue
            header = _HEADER.match(line)
            if header:
                names = _key_parts(header.group(2))
                if header.group(1) == "[[":
                    index = counts.get(names, 0)
                    counts[names] = index + 1
                    table = (*names, index)
                else:
                    table = names
                self.lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if not key:
                continue
            path = (*table, *_key_parts(key.group(1)))
            self.lines.setdefault(path, number)
            value = key.group(2)
            if value.startswith("{"):
                for inner in _INLINE_KEY.findall(value):
                    self.lines.setdefault((*path, inner.strip("\"'")), number)
            elif value.startswith("["):
                index = self._elements(value[1:], path, 0, number)
                if "]" not in value.split("#", 1)[0]:
                    array_path, array_index = path, index

    def _elements(self, text: str, path: Path, index: int, number: int) -> int:
        for _ in _ELEMENT.findall(text.split("#", 1)[0] if "#" in text and '"' not in text else text):
            self.lines.setdefault((*path, index), number)
            index += 1
        return index

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest placed parent; None if nothing matches."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None
