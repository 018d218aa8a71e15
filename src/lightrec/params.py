"""Types with their allowed range, for the arguments configs set.

A constructor that a config instantiates declares its arguments with these (``dropout:
Probability``), so the class owns its rules and :mod:`lightrec.config.check` refuses a bad
value before any work starts, naming the key. They are plain ``Annotated`` types: type
checkers and readers see ``float`` / ``int``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """Bounds of a number; ``None`` leaves a side open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, x: float) -> bool:
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))

    def describe(self) -> str:
        """
        >>> Range(0.0, 1.0, hi_open=True).describe(), Range(1).describe()
        ('in [0, 1)', 'at least 1')
        >>> Range(0.0, lo_open=True).describe()
        'greater than 0'
        """
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{'greater than' if self.lo_open else 'at least'} {self.lo:g}"
        assert self.hi is not None
        return f"{'less than' if self.hi_open else 'at most'} {self.hi:g}"


@dataclass(frozen=True)
class Name:
    """A string that becomes one folder name: letters, digits, ``_``, ``.`` and ``-``, no
    path separator and no ``..``, so the folder stays inside its root."""

    def contains(self, s: str) -> bool:
        """
        >>> Name().contains("multi_vae_v3"), Name().contains("../../x"), Name().contains("a/b")
        (True, False, False)
        """
        return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", s) is not None and ".." not in s

    def describe(self) -> str:
        return "made of letters, digits, _ . - (one folder name: no / and no ..)"


@dataclass(frozen=True)
class Duration:
    """Lightning's ``max_time`` string: ``DD:HH:MM:SS``, more than zero."""

    def contains(self, s: str) -> bool:
        """
        >>> Duration().contains("00:00:08:00"), Duration().contains("8 min")
        (True, False)
        >>> Duration().contains("00:00:00:00"), Duration().contains("00:00:61:00")
        (False, False)
        """
        m = re.fullmatch(r"(\d{2}):(\d{2}):(\d{2}):(\d{2})", s)
        if m is None:
            return False
        days, hours, minutes, seconds = map(int, m.groups())
        return (
            hours < 24
            and minutes < 60
            and seconds < 60
            and (days, hours, minutes, seconds) != (0, 0, 0, 0)
        )

    def describe(self) -> str:
        return "of the form DD:HH:MM:SS such as 00:00:08:00 (8 minutes), more than zero"

    @staticmethod
    def seconds(s: str) -> int:
        """
        >>> Duration.seconds("01:02:03:04")
        93784
        """
        days, hours, minutes, seconds = map(int, s.split(":"))
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds

    @staticmethod
    def of(seconds: float) -> str:
        """``seconds`` (at least 1, whole) as ``DD:HH:MM:SS``.

        >>> Duration.of(93784.7), Duration.of(0.2)
        ('01:02:03:04', '00:00:00:01')
        """
        s = max(1, int(seconds))
        return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


CONSTRAINTS = (Range, Name, Duration)  # what an Annotated hint may carry (config_check reads)
Probability = Annotated[float, Range(0.0, 1.0, hi_open=True)]  # a rate: dropout, masking
OpenFraction = Annotated[float, Range(0.0, 1.0, lo_open=True, hi_open=True)]
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0.0, lo_open=True)]
NonNegativeFloat = Annotated[float, Range(0.0)]
FolderName = Annotated[str, Name()]  # model_name: the runs' folder under the log root
MaxTime = Annotated[str, Duration()]  # trainer.max_time
