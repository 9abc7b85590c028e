"""Pretraining's parts that need no full run: the batch order, the progress lines, choosing the
snapshots by probe accuracy, and a few steps of a miniature recipe (deterministic: the same recipe
gives the same weights, bit for bit, probed or not)."""

import itertools
import json

import pytest
import torch

from ptr_pipeline.conversation import Encoded
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.storage import CHECKPOINT_MANIFEST
from ptr_pipeline.training.tokenize import collate
from ptr_pipeline.world import WorldRecipe, build_world_models
from ptr_pipeline.world.pretrain import Progress, batch_order, pretrain
from ptr_pipeline.world.probe import choose_snapshots, probe_steps


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


def _progress(times: list[float], total: int, forced: set[int] = frozenset()) -> list[int]:
    """The steps that print a line, when step s ends at ``times[s]`` (times[0]: the start)."""
    lines: list[str] = []
    clock = iter(times)
    progress = Progress(total, lines.append, every_s=10.0, clock=lambda: next(clock))
    for step in range(1, total + 1):
        progress.update(step, loss=0.5, force=step in forced)
    return [int(line.split("step ")[1].split("/")[0]) for line in lines]


def test_progress_lines_come_every_10_seconds_of_work_whatever_the_step_time():
    fast = [0.1 * s for s in range(401)]  # 0.1 s a step: a line every 100 steps
    assert _progress(fast, 400) == [100, 200, 300, 400]
    slow = [3.0 * s for s in range(11)]  # 3 s a step: every 4th step (12 s >= 10 s)
    assert _progress(slow, 10) == [4, 8, 10]  # ... and the last step
    uneven = [0, 1, 2, 15, 16, 17, 30]  # a long step is reported at once
    assert _progress(uneven, 6) == [3, 6]


def test_snapshot_steps_force_a_line_and_the_clock_restarts_there():
    steady = [1.0 * s for s in range(31)]
    assert _progress(steady, 30, forced={5, 12}) == [5, 12, 22, 30]


def test_a_progress_line_gives_step_loss_elapsed_and_expected_total():
    lines: list[str] = []
    clock = itertools.chain([0.0, 96.0])
    Progress(400, lines.append, clock=lambda: next(clock)).update(120, 0.81234)
    assert lines == [
        "world: pretraining step 120/400 loss 0.8123 (1:36 elapsed, about 5:20 in all)"
    ]
    clock = itertools.chain([0.0, 4000.0])
    Progress(10, lines.append, clock=lambda: next(clock)).update(5, 1.0)
    assert lines[-1].endswith("(1:06:40 elapsed, about 2:13:20 in all)")


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
        # a progress line at each snapshot step and at the end, whatever the clock says
        assert {"1", "2", "4"} <= {line.split("step ")[1].split("/")[0] for line in lines[1:]}
        runs.append((losses, seen[4]))
    (losses_a, weights_a), (losses_b, weights_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_snapshots_are_chosen_closest_to_the_targets_in_order():
    accuracy = {200: 0.10, 205: 0.33, 210: 0.57, 215: 0.39, 220: 0.72, 225: 0.69, 400: 1.0}
    targets = {"weak": 0.35, "base": 0.70}
    # weak 0.33 (205) and base 0.69 (225) or 0.72 (220): the pair with the smallest total
    # distance (0.02 + 0.01 = 0.03 at (205, 225); (215, 225) gives 0.04 + 0.01)
    assert choose_snapshots(accuracy, targets, 400) == {"weak": 205, "base": 225, "strong": 400}
    # base must come after weak, whatever their own distances
    late = {200: 0.70, 205: 0.35, 210: 0.20, 400: 1.0}
    assert choose_snapshots(late, targets, 400) == {"weak": 205, "base": 210, "strong": 400}
    with pytest.raises(ValueError, match="need 2"):
        choose_snapshots({200: 0.3, 400: 1.0}, targets, 400)


def test_a_probed_build_saves_the_chosen_copies_and_does_not_disturb_training(tmp_path):
    small = dict(hidden_size=64, num_layers=1, intermediate_size=64, batch_size=8, steps=12,
                 torch_threads=2, probe_items=10)  # fmt: skip
    probed = WorldRecipe(**small, probe_from=4, probe_every=4)
    assert probe_steps(probed) == [4, 8, 12]
    folders = build_world_models(tmp_path / "probed", probed, on_line=lambda line: None)
    manifests = {r: json.loads((p / CHECKPOINT_MANIFEST).read_text()) for r, p in folders.items()}
    assert [manifests[r]["step"] for r in ("weak", "base", "strong")] == [4, 8, 12]
    assert set(manifests["weak"]["probe_accuracy"]) == {"4", "8", "12"}
    # The same recipe with those steps fixed trains the same run: probing leaves no trace
    fixed = WorldRecipe(**small, snapshots={"weak": 4, "base": 8, "strong": 12})
    again = build_world_models(tmp_path / "fixed", fixed, on_line=lambda line: None)
    for role in ("weak", "base", "strong"):
        a = json.loads((again[role] / CHECKPOINT_MANIFEST).read_text())
        assert a["loss_curve"] == manifests[role]["loss_curve"]
        assert a["files"]["model.safetensors"] == manifests[role]["files"]["model.safetensors"]
