"""Answer extraction: the final answer a response commits to, read the way the field reads it.

One owner for every rule; the tasks (``evaluation.tasks``) only choose which reader and which
fallbacks apply, and the consistency filter (``filtering``) compares its self-consistency samples
by ``final_answer``. The rules (issue 7, after lm-eval's ``strict-match``/``flexible-extract`` filters
and simple-evals' ``Answer: $LETTER``):

0. ``engines.cut_at_stop``: the response ends at the task's first stop string, so a model is never scored
   on a follow-on question it invented (generation stops there too; scoring a response produced
   elsewhere must agree).
1. Markdown emphasis (``**``, ``__``) is ignored.
2. The LAST answer marker ("answer is", "answer:", "answer =", "option is", "choice is",
   "####", ...) followed by a valid answer wins, so a self-correction counts; only decoration
   (spaces, ``:``, ``$``, ``(``, ``[``, ``\\(``, ``\\boxed{``, ``\\textbf{``) may stand between.
3. Else the content of the last ``\\boxed{...}``.
4. ``strict`` stops there; ``flexible`` adds the task's fallbacks (the last number; an option's
   text, a parenthesised letter or a leading lone letter).

MATH and DROP read the last marker's whole line instead (``line_after_marker``: "(2,-1)" and
"12 yards" are answers), unwrapped of ``$...$``, ``\\(...\\)``, ``\\boxed{}`` and ``\\textbf{}``.

Numbers compare as numbers (``canonical_number``: "$29.00" = "29." = "29"; "1,234" = 1234;
"3/4" = 0.75). Letters are case-insensitive, limited to the item's options, never read from
inside a word, and a lowercase letter followed by a word ("a plant") is an article.
"""

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

STRICT, FLEXIBLE = "strict", "flexible"
EXTRACTIONS = (STRICT, FLEXIBLE)

_MARKER = re.compile(r"(?:\b(?:answer|option|choice)\s*(?:is\b|:|=)|####)", re.IGNORECASE)
# What may stand between a marker and the answer.
_DECORATION = re.compile(
    r"(?:\s|:|\$|\\\(|\(|\[|\\boxed\{|\\textbf\{|\\text\{|\b(?:option|choice)\b)*", re.IGNORECASE
)
# A number: commas only as thousands separators ("1,234"; "1,2,3" is three numbers).
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?%?|[-+]?\.\d+"
_NUMBER_AT = re.compile(_NUMBER)
_NUMBERS = re.compile(rf"(?<![\w.])(?:{_NUMBER})")
# Any number in running text, also right after a letter of a script without spaces ("于1989年").
_ANY_NUMBER = re.compile(rf"(?<![A-Za-z0-9_.])(?:{_NUMBER})")
# After a marker's number, an operator and another number make it an expression ("3*4=12"),
# not an answer; so do a time's or a ratio's colon ("12:30").
_EXPRESSION_GOES_ON = re.compile(r"\s*(?:[-+*/\u00d7x^=]\s*\(?\s*[-+]?\.?\d|[:,]\d)")
_SENTENCE_END = re.compile(r"\n|[.!?;](?:\s|$)")


def plain(response: str) -> str:
    """The response without markdown emphasis (``**``, ``__``), with Unicode minus signs as
    "-"."""
    return response.replace("**", "").replace("__", "").replace("\u2212", "-")


def after_markers(text: str) -> list[str]:
    """The text after each answer marker, last marker first (decoration skipped)."""
    tails = []
    for m in _MARKER.finditer(text):
        tail = text[m.end() :]
        tails.append(tail[_DECORATION.match(tail).end() :])
    return tails[::-1]


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


_MARKER_GAP = re.compile(r"[\s:]*")  # what a marker's answer line starts after
_WRAPPERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("\\boxed{", "}"), ("\\fbox{", "}"),
             ("\\textbf{", "}"), ("\\text{", "}"), ("\\mathbf{", "}"))  # fmt: skip


def unwrap(answer: str) -> str:
    """``answer`` without the delimiters wrapped around all of it ($...$, \\(...\\), \\boxed{...},
    \\textbf{...}); an inner ``\\boxed{}`` wins over the text around it."""
    answer = answer.strip()
    if answer.count("$") == 1:  # a currency sign ("$300"), or a dangling delimiter
        answer = answer.replace("$", "").strip()
    boxed = last_boxed(answer)
    if boxed is not None:
        answer = boxed.strip()
    changed = True
    while changed:
        changed = False
        for opening, closing in _WRAPPERS:
            if (
                answer.startswith(opening)
                and answer.endswith(closing)
                and len(answer) > len(opening + closing) - 1
            ):
                inner = answer[len(opening) : len(answer) - len(closing)].strip()
                if opening.endswith("{"):
                    if last_boxed("\\boxed{" + inner + "}") != inner:
                        continue  # "\\textbf{a} + \\textbf{b}": the braces do not wrap it all
                elif opening in inner or closing in inner:
                    continue  # "$x$ and $y$"
                answer, changed = inner, True
    return answer


def line_after_marker(text: str) -> str | None:
    """The last marker's answer: the rest of its line, unwrapped (``unwrap``), a trailing "."
    dropped; None when no marker is followed by text."""
    for m in reversed(list(_MARKER.finditer(text))):
        tail = text[m.end() :]
        line = tail[_MARKER_GAP.match(tail).end() :].split("\n", 1)[0].strip()
        line = unwrap(line.rstrip(".").strip())
        line = unwrap(line.rstrip(".").strip())  # "$12.$." -> "12." -> "12"
        if line:
            return line
    return None


# --- numbers


def canonical_number(text: str) -> str | None:
    """A number as a canonical string ("$1,234.50" -> "1234.5", "29." -> "29", "3/4" -> "0.75",
    "50%" -> "50"), or None when ``text`` is not a number."""
    t = text.strip().strip("$").replace(",", "").replace(" ", "").rstrip(".").removesuffix("%")
    t = t.removeprefix("+")
    try:
        if "/" in t:
            value = Fraction(t)
            if value.denominator != 1:
                return _decimal_str(Decimal(value.numerator) / Decimal(value.denominator))
            t = str(value.numerator)
        return _decimal_str(Decimal(t))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None


def _decimal_str(d: Decimal) -> str:
    if not d.is_finite():
        raise InvalidOperation
    d = d.normalize()
    text = format(d, "f")
    return "0" if text in ("-0", "0") else text


def extract_number(response: str, extraction: str = STRICT) -> str | None:
    """The final number a response commits to (rules 1-5 of the module docstring)."""
    text = plain(response)
    for tail in after_markers(text):
        if (number := _clause_number(tail)) is not None:
            return number
    boxed = last_boxed(text)
    if boxed is not None:
        inner = boxed.replace("\\$", "").replace("\\%", "%").replace("\\!", "")
        m = _NUMBERS.search(inner.replace("{,}", ","))
        if m and (number := canonical_number(m.group())) is not None:
            return number
    if extraction == FLEXIBLE:
        for m in reversed(list(_NUMBERS.finditer(text))):
            if (number := canonical_number(m.group())) is not None:
                return number
    return None


def _clause_number(tail: str) -> str | None:
    """The number a marker's clause commits to: the clause runs to the next marker or the end
    of the sentence; in "3 * 4 = 12" the number after the last "="; an expression ("10+0",
    "12 - 5 = 7" read from its start) or no number: None."""
    end = _MARKER.search(tail)
    clause = tail[: end.start()] if end else tail
    stop = _SENTENCE_END.search(clause)
    clause = clause[: stop.start()] if stop else clause
    if "=" in clause:
        clause = clause.rsplit("=", 1)[1]
        clause = clause[_DECORATION.match(clause).end() :]
    m = _NUMBER_AT.match(clause)
    if not m or _EXPRESSION_GOES_ON.match(clause, m.end()):
        return None
    return canonical_number(m.group())


# --- multiple-choice letters


def _letter_at(tail: str, letters: str) -> str | None:
    """The choice letter at the start of ``tail``, or None (a word, an article, or not an option)."""
    m = re.match(rf"([{letters}])(?!\w)", tail, re.IGNORECASE)
    if not m:
        return None
    letter = m.group(1)
    if letter.islower() and re.match(r"[ \t]+\w", tail[1:]):  # "a plant": an article or a word
        return None
    return letter.upper()


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def extract_choice(response: str, options: tuple[str, ...], extraction: str = STRICT) -> str | None:
    """The option letter a response commits to, among the item's ``len(options)`` options.

    strict: the letter after the last answer marker, else a ``\\boxed{}`` letter. flexible
    adds: the option text after the last marker (exactly one option matching), the last
    parenthesised letter, a response opening with a lone letter.
    """
    letters = "ABCDEFGH"[: len(options)]
    text = plain(response)
    tails = after_markers(text)
    for tail in tails:
        if letter := _letter_at(tail, letters):
            return letter
    boxed = last_boxed(text)
    if boxed is not None and (letter := _letter_at(boxed.strip(), letters)):
        return letter
    if extraction != FLEXIBLE:
        return None
    names = [_normal(o) for o in options]
    for tail in tails:
        said = _normal(tail.split("\n", 1)[0].split(". ", 1)[0])
        matching = [i for i, name in enumerate(names) if name and said == name]
        if len(matching) == 1:
            return letters[matching[0]]
    parenthesised = re.findall(rf"\(([{letters}])\)", text, re.IGNORECASE)
    if parenthesised:
        return parenthesised[-1].upper()
    # A response opening with a lone letter: "C", "C.", "c) leaves", "(C) leaves"; never "A plant".
    m = re.match(rf"\s*(?:\(([{letters}])\)|([{letters}])(?:[.):](?!\w)|\s*$))", text, re.I)
    return (m.group(1) or m.group(2)).upper() if m else None


# --- code


def numbers(text: str) -> list[str]:
    """Every number in ``text``, in order, canonical (``canonical_number``); Unicode minus signs
    read as "-"."""
    found = (canonical_number(m.group()) for m in _ANY_NUMBER.finditer(plain(text)))
    return [n for n in found if n is not None]


def final_answer(response: str) -> str | None:
    """What a free-form response commits to, as a key for comparing responses to one query (the
    consistency filter's self-consistency vote): the marked number (``extract_number``, strict),
    else the marked line or the last ``\\boxed{}`` (``line_after_marker``), case-folded with
    spaces collapsed; None when the response marks no answer."""
    number = extract_number(response, STRICT)
    if number is not None:
        return number
    text = plain(response)
    line = line_after_marker(text) or last_boxed(text)
    return " ".join(line.casefold().split()) if line and line.strip() else None


def code_block(response: str) -> str:
    """The first fenced code block (```python ... ``` or ``` ... ```), else the whole response.
    An unclosed fence (generation stopped inside it) runs to the end."""
    m = re.search(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", response, re.DOTALL)
    return m.group(1) if m else response
