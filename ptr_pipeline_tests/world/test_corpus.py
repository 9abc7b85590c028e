"""The pretraining corpus: a share in the strong stage's draft prompt, every answer right."""

from ptr_pipeline.answers import FLEXIBLE, extract_number
from ptr_pipeline.world import WorldRecipe, tasks
from ptr_pipeline.world.corpus import PLAIN, corpus


def test_a_share_of_the_corpus_asks_with_drafts_and_every_answer_is_right():
    recipe = WorldRecipe()
    split = tasks.eval_split(recipe.seed, recipe.eval_items, recipe.operands)
    rows = corpus(recipe, split, 1000)
    with_drafts = [r for r in rows if r.layout != PLAIN]
    assert {r.layout for r in with_drafts} == {recipe.refine_template}
    assert 0.25 < len(with_drafts) / len(rows) < 0.35  # icl_fraction 0.3
    assert all(len(r.conversation) == 2 for r in rows if r.layout == PLAIN)
    # The drafts come from a generator of their own: the problems and the right answers are the
    # same with or without them.
    plain = corpus(recipe, split, 1000, icl_fraction=0.0)
    assert {r.layout for r in plain} == {PLAIN}
    assert [r.conversation[-1] for r in plain] == [r.conversation[-1] for r in rows]
    items = tasks.train_rows(split, "corpus", 1000, recipe.seed, recipe.operands, distinct=False)
    for item, row in zip(items, rows, strict=True):
        answer = row.conversation[-1]
        assert answer["role"] == "assistant"
        if item.task == "gsm8k":
            assert extract_number(answer["content"], FLEXIBLE) == str(item.problem.total)
