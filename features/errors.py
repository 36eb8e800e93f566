"""Errors a user can meet, each saying what is wrong, where, and how to fix it.

The CLI turns any ``ChurnguardError`` into one clear message and a non-zero exit; the API turns them
into JSON. Nothing below raises a bare ``ValueError`` at a user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class ChurnguardError(Exception):
    """Base of every error a user can cause and fix."""


class ConfigError(ChurnguardError):
    """A configuration value, file or option is wrong."""


class ModelNotFoundError(ChurnguardError):
    """No registered model answers the requested URI or alias."""


class RenamedSettingWarning(FutureWarning):
    """A setting or config key was given under a name this version renamed: it still works, and the
    message names the new one. A ``FutureWarning``, so Python shows it to the user by default."""


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with one column (or file) of the input data."""

    file: str
    column: str | None
    problem: str
    hint: str
    n_rows: int = 0
    examples: Sequence[object] = field(default_factory=tuple)

    def describe(self) -> str:
        where = f"{self.file}" + (f", column '{self.column}'" if self.column else "")
        rows = f" ({self.n_rows} row{'s' if self.n_rows != 1 else ''})" if self.n_rows else ""
        shown = ", ".join(repr(e) for e in list(self.examples)[:5])
        example_text = f"\n    e.g. {shown}" if shown else ""
        return f"  - {where}: {self.problem}{rows}{example_text}\n    fix: {self.hint}"


class DataValidationError(ChurnguardError):
    """The input data breaks the data contract; every problem found is listed, not just the first."""

    def __init__(self, problems: Sequence[DataProblem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        header = f"The input data breaks the data contract ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([header, *(p.describe() for p in self.problems)]))
