from __future__ import annotations

import torch

from clipserve.runtime.text_tower import length_groups

EOT = 49407


def batch(lengths: list[int]) -> torch.Tensor:
    ids = torch.zeros((len(lengths), 77), dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, : length - 1] = 320
        ids[row, length - 1] = EOT
    return ids


def test_similar_lengths_stay_one_batch() -> None:
    (group,) = length_groups(batch([8, 9, 7, 8]))
    assert sorted(group.tolist()) == [0, 1, 2, 3]


def test_one_long_prompt_among_short_ones_is_split_off() -> None:
    short, long = length_groups(batch([8, 77, 9, 8, 7, 8]))
    assert sorted(short.tolist()) == [0, 2, 3, 4, 5]
    assert long.tolist() == [1]


def test_groups_cover_every_row_once() -> None:
    lengths = [5, 70, 6, 60, 7, 77, 8, 9]
    groups = length_groups(batch(lengths))
    assert sorted(torch.cat(groups).tolist()) == list(range(len(lengths)))
