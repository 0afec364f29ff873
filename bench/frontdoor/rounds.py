"""Rounds of a scenario (pure): the order the peers take in each round, a figure over the rounds as its
median and spread (min-max), the ratios between two peers that the floors are about, and the floors.

A shared 2-core machine drifts: other work comes and goes within minutes. One run per peer and scenario
shows that drift as a difference between peers. So every scenario runs in rounds, every peer once per
round, the order rotating from round to round; a figure is the median over the rounds, and its spread
says how far to trust it. A ratio is taken of the two medians, and per round too: the two runs of one
round are seconds apart, so the spread of those ratios shows the noise that both peers shared."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
DASH = "\u2013"  # an en dash between min and max: a hyphen misreads around negative values, (-1.7-1.6)


@dataclass
class Schedule(Generic[T]):
    """The timed runs in order: each scenario, ``rounds`` rounds, every peer once per round in a rotating
    order (``turn`` carries on across CPU limits). Runs that would start past the time budget are named in
    ``skipped`` instead."""

    rounds: int
    budget_seconds: float
    clock: Callable[[], float]
    begun: float = 0.0
    turn: int = 0
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.begun = self.clock()

    def runs(self, scenarios: Iterable[tuple[int, int]], peers: Sequence[T], name: Callable[[T], str],
             label: str) -> Iterator[tuple[int, int, int, T]]:
        """(messages per connection, clients, round, peer) of each run to make."""
        for per_connection, clients in scenarios:
            for round_ in range(1, self.rounds + 1):
                for peer in rotation(peers, self.turn):
                    if self.clock() - self.begun > self.budget_seconds:
                        self.skipped.append(f"{name(peer)} {label} {per_connection}/conn x {clients} "
                                            f"round {round_}")
                        continue
                    yield per_connection, clients, round_, peer
                self.turn += 1

    def note(self) -> str | None:
        if not self.skipped:
            return None
        return (f"Time budget ({self.budget_seconds:g} s) spent: {len(self.skipped)} timed runs not run "
                f"({self.skipped[0]} … {self.skipped[-1]}).")


def rotation(items: Sequence[T], turn: int) -> list[T]:
    """The order of round ``turn``: ABC, BCA, CAB, ABC …, so every peer runs first, second and last as
    often as the others (whoever runs right after a noisy moment pays for it)."""
    if not items:
        return []
    shift = turn % len(items)
    return [*items[shift:], *items[:shift]]


@dataclass(frozen=True)
class Spread:
    """A figure over rounds."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread | None:
        """None when there is no value (NaN and infinite values are left out: a run without messages)."""
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return None
        return cls(statistics.median(finite), min(finite), max(finite), len(finite))

    def show(self, digits: int = 0) -> str:
        """``612 (580<en dash>640)``; a single value alone."""
        median = f"{self.median:.{digits}f}"
        if self.count == 1:
            return median
        return f"{median} ({self.low:.{digits}f}{DASH}{self.high:.{digits}f})"


def show(spread: Spread | None, digits: int = 0) -> str:
    return "-" if spread is None else spread.show(digits)


def ratio(numerator: float, denominator: float) -> float:
    """NaN when either side is missing or the denominator is 0."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def ratio_of_medians(numerators: Iterable[float], denominators: Iterable[float]) -> float:
    top, bottom = Spread.of(numerators), Spread.of(denominators)
    return ratio(top.median, bottom.median) if top and bottom else math.nan


def round_ratios(numerators: Mapping[int, float], denominators: Mapping[int, float]) -> list[float]:
    """The ratio within each round both peers ran in, in round order."""
    return [r for n in sorted(numerators.keys() & denominators.keys())
            if math.isfinite(r := ratio(numerators[n], denominators[n]))]


@dataclass(frozen=True)
class Floor:
    """``ratio >= bound`` (``at_least``) or ``ratio <= bound``, where ratio is relay / the other peer."""

    name: str  # what is compared: "msgs/s", "CPU ms/msg", "end-to-end msgs/s"
    other: str  # the peer in the denominator
    bound: float
    at_least: bool = True

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value >= self.bound if self.at_least else value <= self.bound

    def describe(self) -> str:
        return f"relay {self.name} {'≥' if self.at_least else '≤'} {self.bound:g} x {self.other}"


@dataclass(frozen=True)
class Check:
    """One floor in one scenario: decided on the ratio of the medians; the rounds are shown beside it."""

    floor: Floor
    median_ratio: float
    rounds: tuple[float, ...]  # the ratio within each round
    clean: bool = True  # no client error, nothing lost: a floor is not met by a run that dropped mail

    @property
    def met(self) -> bool:
        return self.clean and self.floor.holds(self.median_ratio)

    @property
    def rounds_met(self) -> int:
        return sum(self.floor.holds(r) for r in self.rounds)

    def spread(self) -> Spread | None:
        return Spread.of(self.rounds)


def check(floor: Floor, relay: Mapping[int, float], other: Mapping[int, float], *,
          clean: bool = True) -> Check:
    """``relay`` and ``other``: the figure per round (round number → value)."""
    return Check(floor, ratio_of_medians(relay.values(), other.values()),
                 tuple(round_ratios(relay, other)), clean)


def parse_cpus(text: str) -> tuple[int | None, ...]:
    """``"1,2"`` → (1, 2); ``none`` is a run without a limit. Each limit once, in the order given."""
    limits: list[int | None] = []
    for part in text.split(","):
        word = part.strip().lower()
        if word == "none":
            value: int | None = None
        elif word.isdigit() and int(word) > 0:
            value = int(word)
        else:
            raise ValueError(f"a CPU limit is a whole number of cores or 'none', not {part.strip()!r}")
        if value not in limits:
            limits.append(value)
    return tuple(limits)


def cpus_label(cpus: int | None) -> str:
    return "no limit" if cpus is None else f"{cpus} core{'s' if cpus > 1 else ''}"


@dataclass(frozen=True)
class FloorRow:
    """A floor checked in one scenario under one CPU limit."""

    cpus: int | None
    mode: str
    clients: int
    check: Check


def floor_table(rows: list[FloorRow]) -> list[str]:
    """The checks as a markdown table, then per floor whether it holds in every scenario."""
    if not rows:
        return []
    lines = ["| floor | CPU limit | mode | clients | ratio of medians | per round, min-max "
             "| rounds meeting it | met |", "|---|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        c = row.check
        spread = c.spread()
        per_round = f"{spread.low:.2f}{DASH}{spread.high:.2f}" if spread else "-"
        verdict = "yes" if c.met else ("no (errors or lost mail)" if not c.clean else "no")
        lines.append(f"| {c.floor.describe()} | {cpus_label(row.cpus)} | {row.mode} | {row.clients} "
                     f"| {_ratio(c.median_ratio)} | {per_round} | {c.rounds_met} of {len(c.rounds)} "
                     f"| {verdict} |")
    lines.append("")
    for floor in dict.fromkeys(row.check.floor for row in rows):
        checks = [row.check for row in rows if row.check.floor == floor]
        held = sum(c.met for c in checks)
        verdict = "met" if held == len(checks) else "not met"
        lines.append(f"- {floor.describe()}: **{verdict}** (holds in {held} of {len(checks)} scenarios "
                     "checked; it must hold in all).")
    return lines


def _ratio(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"
