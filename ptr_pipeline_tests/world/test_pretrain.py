"""Pretraining's parts that need no full run: the batch order, the collation, and a few steps of
a miniature recipe (deterministic: the same recipe gives the same weights, bit for bit)."""

import torch

from ptr_pipeline.conversation import Encoded
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.training.tokenize import collate
from ptr_pipeline.world import WorldRecipe
from ptr_pipeline.world.pretrain import batch_order, pretrain


def test_batches_hold_one_layout_each_and_every_row_once():
    layouts = ["plain"] * 70 + ["ptr_refine_v2"] * 30
    batches = batch_order(layouts, 16, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert all(len({layouts[i] for i in b}) == 1 for b in batches)
    # per layout: full batches and one partial (70 = 4 x 16 + 6, 30 = 16 + 14)
    assert sorted(len(b) for b in batches) == [6, 14, *[16] * 5]
    assert batch_order(layouts, 16, seed=0) == batches
    assert batch_order(layouts, 16, seed=1) != batches


def test_the_collation_pretraining_uses_right_pads_with_a_mask():
    """What every built world was trained on: a row per conversation, padded on the right with
    the pad id, padding unsupervised and masked. A change here changes every world's models
    (CODE_VERSION in world/recipe.py)."""
    rows = [Encoded([5, 6, 7], [IGNORE_INDEX, 6, 7], [0.0, 1.0, 1.0], [0, 1, 1]),
            Encoded([8], [8], [1.0], [1])]  # fmt: skip
    batch = collate(rows, pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.input_ids.dtype == batch.labels.dtype == batch.attention_mask.dtype == torch.long


def test_a_few_steps_of_a_miniature_recipe_are_deterministic():
    recipe = WorldRecipe(
        hidden_size=64, num_layers=1, intermediate_size=64, batch_size=8, steps=4,
        snapshots={"weak": 1, "base": 2, "strong": 4}, torch_threads=2,
    )  # fmt: skip
    threads = torch.get_num_threads()
    runs = []
    for _ in range(2):
        seen, lines = {}, []

        def on_step(model, tokenizer, step, losses, seen=seen):
            seen[step] = {k: v.clone() for k, v in model.state_dict().items()}

        losses = pretrain(recipe, on_step, lines.append)
        assert torch.get_num_threads() == threads  # the recipe's count was pinned, then restored
        assert list(seen) == [1, 2, 3, 4] and len(losses) == 4
        assert lines[0].startswith("world: pretraining a ")
        runs.append((losses, seen[4]))
    (losses_a, weights_a), (losses_b, weights_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
