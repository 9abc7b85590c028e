"""The miniature world's task family: addition, solved digit by digit.

A problem is a pair of operands (two digits each by default). Its solution is a scratchpad from
the least significant digit up, each step with its carry ("8+9+0=17 5+5+1=11"), then the answer:
a format a model of a million parameters learns in a few hundred steps, where plain
most-significant-first answers stay near 0% (docs/world.md). Errors are local (a misread digit
or a wrong digit sum, whose carry then propagates: ``Problem.draft_steps``), so a second attempt
that checks each step can fix a first one.

Two renderings in the Hugging Face hub schemas the eval stage already reads, so its loaders,
prompts and extractors run unchanged on the world:

- ``gsm8k`` (``openai/gsm8k``): "What is 58 + 59?"; the answer field is the scratchpad then
  ``#### 117``; a response ends "The answer is 117.".
- ``arc`` (``allenai/ai2_arc``): "Which number equals 58 + 15?" with four options, the three
  wrong ones each one local error away from the sum; a response ends "The answer is (D).".

Everything is a pure function of a seed. The held-out eval problems are drawn first and excluded,
by their operands, from every other draw (query pool, pretraining corpus), in both renderings.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass

LETTERS = "ABCD"
WORLD_TASKS = ("gsm8k", "arc")


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def key(self) -> tuple[int, int]:
        """The identity used for splits: the same operands in either order are one problem."""
        return (min(self.a, self.b), max(self.a, self.b))

    @property
    def total(self) -> int:
        return self.a + self.b

    def steps(self) -> tuple[list[str], int]:
        """The right scratchpad steps and the total they spell."""
        return self._scratchpad({})

    def _scratchpad(self, slips: dict[int, tuple[int | None, int | None, int]]):
        """Steps where step i reads digits ``x``/``y`` (None: the right one) and adds ``error``
        to its sum, for each ``i: (x, y, error)`` in ``slips``; the carry follows what is written."""
        da, db = str(self.a)[::-1], str(self.b)[::-1]
        carry, steps, digits = 0, [], []
        for i in range(max(len(da), len(db))):
            misread_x, misread_y, error = slips.get(i, (None, None, 0))
            x = int(da[i]) if i < len(da) else 0
            y = int(db[i]) if i < len(db) else 0
            x = x if misread_x is None else misread_x
            y = y if misread_y is None else misread_y
            s = max(x + y + carry + error, 0)
            steps.append(f"{x}+{y}+{carry}={s}")
            digits.append(s % 10)
            carry = s // 10
        if carry:
            digits.append(carry)
        return steps, int("".join(map(str, reversed(digits))))

    def draft_steps(self, rng: random.Random, slip_rate: float = 0.5) -> tuple[list[str], int]:
        """A hurried solver's draft: each step, with probability ``slip_rate``, misreads one
        operand digit or mis-adds by one or two (the slips the world's weak model makes); the
        draft may still be right. Such drafts are what the strong model learns to read past."""
        slips = {}
        for i in range(max(len(str(self.a)), len(str(self.b)))):
            if rng.random() < slip_rate:
                kind = rng.choice(["x", "y", "sum"])
                digit = rng.randrange(10)
                slips[i] = (
                    digit if kind == "x" else None,
                    digit if kind == "y" else None,
                    rng.choice([-2, -1, 1, 2]) if kind == "sum" else 0,
                )
        return self._scratchpad(slips)


def draw_problem(rng: random.Random, operands: tuple[int, int]) -> Problem:
    """Two operands drawn from ``operands`` (inclusive). The world's default, 10 to 99, gives
    every problem the same operand shape, so each digit a step needs sits at the same place in
    every prompt (docs/world.md: mixed lengths kept a 0.7M-parameter model at 0%)."""
    low, high = operands
    return Problem(rng.randint(low, high), rng.randint(low, high))


def distractors(problem: Problem, rng: random.Random) -> list[int]:
    """Three wrong options, each one local error away from the sum (one digit off by one or two)
    and as long as the sum."""
    total, n = problem.total, len(str(problem.total))
    candidates = sorted(
        {total + sign * step * 10**k for sign in (-1, 1) for step in (1, 2) for k in range(n)}
        - {total}
    )
    same_length = [c for c in candidates if c > 0 and len(str(c)) == n]
    return sorted(rng.sample(same_length, 3))


def record(task: str, problem: Problem, rng: random.Random, index: int) -> dict:
    """``problem`` as one row of ``task``'s hub schema (see the module docstring)."""
    steps, total = problem.steps()
    if task == "gsm8k":
        return {
            "question": f"What is {problem.a} + {problem.b}?",
            "answer": f"{' '.join(steps)}\n#### {total}",
        }
    if task == "arc":
        options = [*distractors(problem, rng), total]
        rng.shuffle(options)
        return {
            "id": f"world-arc-{index}",
            "question": f"Which number equals {problem.a} + {problem.b}?",
            "choices": {"text": [str(o) for o in options], "label": list(LETTERS)},
            "answerKey": LETTERS[options.index(total)],
        }
    raise KeyError(f"unknown world task {task!r}; the world has {list(WORLD_TASKS)}")


def response(task: str, row: dict, steps: list[str], total: int) -> str:
    """The answer text a model should write for ``row`` given a scratchpad (right or flawed)."""
    pad = " ".join(steps)
    if task == "gsm8k":
        return f"{pad} The answer is {total}."
    options = [int(o) for o in row["choices"]["text"]]
    # A flawed total names the option nearest to it, as a hurried solver would.
    nearest = min(range(len(options)), key=lambda i: (abs(options[i] - total), i))
    return f"{pad} The sum is {total}. The answer is ({LETTERS[nearest]})."


@dataclass(frozen=True)
class Item:
    """One drawn problem of a task, with its row in that task's hub schema (``record``)."""

    task: str
    problem: Problem
    row: dict


@dataclass(frozen=True)
class Split:
    """The world's items for one seed: held-out eval rows per task, and a disjoint query draw."""

    eval_rows: dict[str, list[dict]]
    held_out: frozenset[tuple[int, int]]


def eval_split(seed: int, eval_items: int, operands: tuple[int, int]) -> Split:
    """``eval_items`` distinct problems per task, drawn first from the seed."""
    rows: dict[str, list[dict]] = {}
    held_out: set[tuple[int, int]] = set()
    for task in WORLD_TASKS:
        rng = random.Random(f"world-eval-{seed}-{task}")
        rows[task] = []
        while len(rows[task]) < eval_items:
            problem = draw_problem(rng, operands)
            if problem.key in held_out:
                continue
            held_out.add(problem.key)
            rows[task].append(record(task, problem, rng, len(rows[task])))
    return Split(rows, frozenset(held_out))


def train_rows(
    split: Split, stream: str, n: int, seed: int, operands: tuple[int, int], distinct: bool = True
) -> Iterator[Item]:
    """``n`` items from the named stream, the tasks in turn, none of them a held-out eval problem;
    ``distinct``: no problem twice (the query pool), else problems may recur (the corpus).

    Raises:
        ValueError: ``distinct`` and fewer than ``n`` problems left outside the eval split.
    """
    low, high = operands
    space = (high - low + 1) * (high - low + 2) // 2 - len(split.held_out)
    if distinct and n > space:
        raise ValueError(f"{n} distinct problems asked, {space} left outside the eval split")
    rng = random.Random(f"world-{stream}-{seed}")
    produced, seen = 0, set(split.held_out)
    while produced < n:
        problem = draw_problem(rng, operands)
        if problem.key in seen:
            continue
        if distinct:
            seen.add(problem.key)
        task = WORLD_TASKS[produced % len(WORLD_TASKS)]
        yield Item(task, problem, record(task, problem, rng, produced))
        produced += 1
