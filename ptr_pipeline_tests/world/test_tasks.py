"""The world's task family: deterministic per seed, right solutions, flawed drafts, disjoint splits."""

import json
import random

import pyarrow as pa

from ptr_pipeline.answers import FLEXIBLE, extract_choice, extract_number
from ptr_pipeline.evaluation.tasks import examples_table, load_examples
from ptr_pipeline.queries import build_query_pool
from ptr_pipeline.queries.settings import QueryPoolSettings
from ptr_pipeline.samples import WORLD_DIR
from ptr_pipeline.world import WorldRecipe, tasks
from ptr_pipeline.world.corpus import corpus
from ptr_pipeline.world.data import world_files


def test_the_scratchpad_adds_digit_by_digit_with_carries():
    steps, total = tasks.Problem(347, 589).steps()
    assert steps == ["7+9+0=16", "4+8+1=13", "3+5+1=9"] and total == 936
    steps, total = tasks.Problem(999, 1).steps()
    assert steps[-1] == "9+0+1=10" and total == 1000


def test_a_hurried_draft_slips_at_its_rate_and_carries_what_it_wrote():
    rng = random.Random(0)
    problem = tasks.Problem(58, 67)
    assert problem.draft_steps(rng, slip_rate=0.0) == problem.steps()
    slipped = 0
    for _ in range(400):
        steps, total = problem.draft_steps(rng, slip_rate=0.5)
        right, _ = problem.steps()
        slipped += sum(s != r for s, r in zip(steps, right, strict=True))
        # Whatever was misread or mis-added, each step's carry is the previous written sum's.
        written = [int(s.split("=")[1]) for s in steps]
        carries = [int(s.split("+")[2].split("=")[0]) for s in steps]
        assert carries == [0, written[0] // 10]
        assert total == int(f"{written[1]}{written[0] % 10}")
    # About half the steps slip (a slip can reproduce the right digit, and a slip in the units
    # step also changes the tens step's carry, so the share is not exactly 0.5).
    assert 0.35 < slipped / 800 < 0.75


def test_responses_are_scored_right_by_the_eval_extractors():
    rng = random.Random(1)

    def extract_letter(text: str) -> str | None:
        return extract_choice(text, ("", "", "", ""), FLEXIBLE)

    for task, extract in (("gsm8k", extract_number), ("arc", extract_letter)):
        for i in range(50):
            problem = tasks.draw_problem(rng, (100, 999))
            row = tasks.record(task, problem, rng, i)
            text = tasks.response(task, row, *problem.steps())
            gold = str(problem.total) if task == "gsm8k" else row["answerKey"]
            assert extract(text) == gold
            steps, total = problem.draft_steps(rng, slip_rate=1.0)
            flawed = tasks.response(task, row, steps, total)
            # a wrong total is never read as the gold (in the MC rendering it names the nearest
            # option, which may still be the key)
            assert extract(flawed) != gold or total == problem.total or task == "arc"


def test_generation_is_deterministic_per_seed_and_differs_across_seeds():
    a, b = world_files(WorldRecipe()), world_files(WorldRecipe())
    assert a == b
    assert world_files(WorldRecipe(seed=1))["gsm8k.jsonl"] != a["gsm8k.jsonl"]


def test_the_bundled_world_files_are_the_default_recipe():
    for name, rows in world_files(WorldRecipe()).items():
        on_disk = [json.loads(line) for line in (WORLD_DIR / name).read_text().splitlines()]
        assert on_disk == rows, f"{name}: run python -m ptr_pipeline.world.data"


def test_no_eval_problem_is_in_the_pool_or_the_pretraining_corpus():
    recipe = WorldRecipe()
    split = tasks.eval_split(recipe.seed, recipe.eval_items, recipe.operands)
    assert len(split.held_out) == 2 * recipe.eval_items  # distinct across both renderings
    pool = [item.problem.key for item in tasks.train_rows(split, "pool", 3000, 0, recipe.operands)]
    assert not set(pool) & split.held_out
    rows = corpus(recipe, split, 3000)
    texts = " ".join(r.conversation[0]["content"] for r in rows)
    for a, b in list(split.held_out)[:200]:
        assert f"{a} + {b}?" not in texts and f"{b} + {a}?" not in texts


def test_the_query_pool_decontamination_finds_nothing_to_drop(tmp_path):
    """The pool's own decontamination step, against the world's eval sets, proves them apart."""
    items = pa.concat_tables(
        [examples_table(t, load_examples(t, "world")) for t in ("gsm8k", "arc")]
    ).select(["task", "example_id", "question"])
    result = build_query_pool(QueryPoolSettings(), tmp_path / "pool.parquet", items)
    assert result.rows == WorldRecipe().pool_queries  # and no near-duplicate either
    assert result.dropped.get("contaminated", 0) == 0
    assert {t: r["matched_queries"] for t, r in result.contamination.items()} == {
        "arc": 0,
        "gsm8k": 0,
    }
    # ... and the same step drops a pool query that states a held-out problem
    leaked = load_examples("arc", "world", 1)[0]
    rows = [json.loads(line) for line in (WORLD_DIR / "queries.jsonl").read_text().splitlines()]
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*rows[:10], {"query": leaked.prompt}])
    )
    result = build_query_pool(
        QueryPoolSettings(source=str(tmp_path / "q.jsonl")), tmp_path / "leak.parquet", items
    )
    assert result.dropped["contaminated"] == 1
    assert result.contamination["arc"]["examples"][0]["eval_item"] == leaked.id
