"""The field's metrics, each through the library or the official code that defines it.

- MATH: symbolic equivalence by ``math-verify`` (Hugging Face's verifier, the one open-r1 and
  lighteval use); never a paid judge.
- XSum: ROUGE-1/2/L F-measure with Porter stemming, by ``rouge-score`` (Google's reimplementation
  of ROUGE-1.5.5, the package HELM and lm-eval use).
- DROP: exact match and token F1 as the official ``drop_eval.py`` computes them (AllenNLP; the
  copy lm-eval ships in ``lm_eval/tasks/drop/utils.py``): lowercase, punctuation and articles
  removed, numbers normalised through ``float``, multi-span answers aligned span to span by
  ``scipy.optimize.linear_sum_assignment``, the maximum over the gold answers. No package on PyPI
  carries it alone, so the functions below follow that file line for line.
- HumanEval: pass@1 of one greedy sample: the program (prompt + completion + tests) runs in
  ``evaluation.sandbox``.
"""

import functools
import re
import secrets
import string
import threading

import numpy as np
from scipy.optimize import linear_sum_assignment

from ptr_pipeline.answers import code_block

# --- MATH (math-verify)


def _timeout(seconds: int) -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    return seconds if threading.current_thread() is threading.main_thread() else None


def _as_latex(answer: str) -> str:
    return answer if "$" in answer or "\\(" in answer else f"${answer}$"


def parse_math(text: str, whole_response: bool = False):
    """math-verify's parse of an answer (wrapped as inline LaTeX), or of a whole response."""
    from math_verify import parse

    return parse(text if whole_response else _as_latex(text), parsing_timeout=_timeout(5))


@functools.lru_cache(maxsize=4096)
def _parsed_gold(gold: str) -> list:
    # Every model and round meets the same golds: each is parsed once per process.
    return parse_math(gold)


def math_equal(gold: str, answer: str | None, whole_response: bool = False) -> bool:
    """Whether ``answer`` equals the gold answer symbolically (``math_verify.verify``)."""
    return math_judge(gold, answer, whole_response)[1]


def math_judge(
    gold: str, answer: str | None, whole_response: bool = False
) -> tuple[str | None, bool]:
    """(what was read, whether it equals the gold symbolically), from one parse of ``answer``:
    read is ``answer`` itself, or for a whole response what math-verify found in it."""
    from math_verify import verify

    if answer is None or not answer.strip():
        return None, False
    predicted = parse_math(answer, whole_response)
    shown = (str(predicted[-1]) if predicted else None) if whole_response else answer
    if not predicted:
        return shown, False
    return shown, bool(verify(_parsed_gold(gold), predicted, timeout_seconds=_timeout(5)))


# --- XSum (rouge-score)

ROUGE_TYPES = ("rougeL", "rouge1", "rouge2")


@functools.cache
def _rouge():
    from rouge_score import rouge_scorer, tokenizers

    # The tokenizer is passed explicitly: left to its default, RougeScorer logs through absl,
    # which calls logging.basicConfig() and so doubles every log line of the process.
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, tokenizer=tokenizer)


def rouge(reference: str, prediction: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure of ``prediction`` against ``reference`` (0.0-1.0)."""
    scores = _rouge().score(reference, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


# --- DROP (official drop_eval.py)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _normalize(answer: str) -> str:
    tokens = []
    for token in re.split(" |-", answer):
        token = token.lower()
        if not _is_number(token):
            token = "".join(ch for ch in token if ch not in _PUNCTUATION)
        if _is_number(token):
            token = str(float(token))
        token = " ".join(_ARTICLES.sub(" ", token).split())
        if token.strip():
            tokens.append(token)
    return " ".join(tokens).strip()


def _bags(spans: tuple[str, ...]) -> tuple[list[str], list[set[str]]]:
    normalized = [_normalize(span) for span in spans]
    return normalized, [set(n.split()) for n in normalized]


def _f1(predicted: set[str], gold: set[str]) -> float:
    intersection = len(gold & predicted)
    precision = 1.0 if not predicted else intersection / len(predicted)
    recall = 1.0 if not gold else intersection / len(gold)
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _numbers_match(gold: set[str], predicted: set[str]) -> bool:
    gold_numbers = {w for w in gold if _is_number(w)}
    return not gold_numbers or bool(gold_numbers & {w for w in predicted if _is_number(w)})


def _align(predicted: list[set[str]], gold: list[set[str]]) -> np.ndarray:
    scores = np.zeros([len(gold), len(predicted)])
    for g, gold_bag in enumerate(gold):
        for p, predicted_bag in enumerate(predicted):
            if _numbers_match(gold_bag, predicted_bag):
                scores[g, p] = _f1(predicted_bag, gold_bag)
    rows, columns = linear_sum_assignment(-scores)
    best = np.zeros([max(len(gold), len(predicted))])
    for row, column in zip(rows, columns, strict=True):
        best[row] = max(best[row], scores[row, column])
    return best


def _drop_one(predicted: tuple[str, ...], gold: tuple[str, ...]) -> tuple[float, float]:
    predicted_bags, gold_bags = _bags(predicted), _bags(gold)
    exact = float(
        set(predicted_bags[0]) == set(gold_bags[0]) and len(predicted_bags[0]) == len(gold_bags[0])
    )
    return exact, round(float(np.mean(_align(predicted_bags[1], gold_bags[1]))), 2)


def drop_scores(prediction: str | None, answers: list[list[str]]) -> dict[str, float]:
    """DROP's exact match and F1 of ``prediction``, the best over the gold ``answers`` (each a
    list of spans). Against a multi-span gold, the prediction is read as a list of spans
    (split on commas and "and"), as the official evaluation expects list predictions."""
    if prediction is None:
        return {"f1": 0.0, "em": 0.0}
    best_em = best_f1 = 0.0
    for gold in answers:
        spans = (prediction,)
        if len(gold) > 1:
            spans = tuple(s for s in re.split(r",\s*(?:and\s+)?|\s+and\s+", prediction) if s)
        em, f1 = _drop_one(spans or (prediction,), tuple(gold))
        best_em, best_f1 = max(best_em, em), max(best_f1, f1)
    return {"f1": best_f1, "em": best_em}


# --- HumanEval (evaluation.sandbox)


def humaneval_program(prompt: str, response: str, test: str, entry_point: str) -> str:
    """The program one HumanEval sample runs: the completion (its first fenced code block, else
    the whole response), as a whole definition of ``entry_point`` (the prompt's imports put
    first) or as a body appended to the prompt; then the tests and ``check(entry_point)``."""
    code = code_block(response)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        imports = "\n".join(
            line for line in prompt.splitlines() if re.match(r"(import|from)\s+\w", line)
        )
        program = f"{imports}\n{code}"
    else:
        program = prompt + code
    return f"{program}\n\n{test}\n\ncheck({entry_point})\n"


def humaneval_passes(program: str, timeout_s: float = 10.0):
    """Run one HumanEval program in the sandbox (``sandbox.SandboxResult``). It passes when it
    exits 0 *after* its last line: a random token written there must reach stderr, so a
    completion that ends the process early with status 0 (``posix._exit(0)``) fails."""
    from ptr_pipeline.evaluation import sandbox

    token = f"ptr-tests-done-{secrets.token_hex(8)}"
    guarded = f"{program}\nimport sys as _ptr_sys\n_ptr_sys.stderr.write({token!r} + '\\n')\n"
    result = sandbox.run_python(guarded, timeout_s=timeout_s, cpu_s=max(1, int(timeout_s)))
    if result.passed and token not in result.detail:
        return sandbox.SandboxResult("failed", "exited with status 0 before the tests finished")
    if result.passed:
        return sandbox.SandboxResult("passed", "")
    return result
