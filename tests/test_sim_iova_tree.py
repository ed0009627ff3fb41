"""backends/simulated/iommu.py IovaTree against a plain sorted list.

Random inserts, overlap-checked inserts, removals (by node and exact range),
lookups and walks, with chunks of 2-4 nodes so that splits, emptied chunks
and the bound-less last chunk are exercised on every run; after each step the
answers, the nodes in order and the chunk invariants are compared.  Seeded:
every run checks the same sequences.
"""

from __future__ import annotations

import random

import pytest

from backends.simulated import iommu
from backends.simulated.iommu import IovaTree


class Node:
    __slots__ = ("iova", "last")

    def __init__(self, iova: int, last: int):
        self.iova, self.last = iova, last

    def __repr__(self) -> str:
        return f"Node({self.iova}, {self.last})"


def overlapping(model: list, start: int, last: int) -> list:
    return [n for n in model if n.iova <= last and n.last >= start]


def check_invariants(tree: IovaTree, model: list) -> None:
    keys, nodes, maxes = tree._keys, tree._nodes, tree._maxes
    assert len(keys) == len(nodes) == len(maxes) + 1
    assert all(keys) or (len(keys) == 1 and not model)      # only the empty tree's chunk is empty
    for c, chunk in enumerate(nodes):
        assert keys[c] == [n.iova for n in chunk]
        if c < len(maxes):
            assert maxes[c] == keys[c][-1]
    assert list(tree) == model and len(tree) == len(model) and bool(tree) == bool(model)


@pytest.mark.parametrize("seed", range(40))
def test_iova_tree_matches_a_sorted_list(seed, monkeypatch):
    monkeypatch.setattr(iommu, "_LOAD", 2)
    monkeypatch.setattr(iommu, "_SPLIT", 4)
    rng = random.Random(seed)
    tree, model = IovaTree(), []
    span = rng.choice([40, 200])
    for _ in range(400):
        op = rng.random()
        start = rng.randrange(span)
        last = start + rng.choice([0, 0, 1, 3])
        if op < 0.35:                                         # insert_free
            node = Node(start, last)
            hit = tree.insert_free(node)
            want = overlapping(model, start, last)
            if want:
                assert hit in want
            else:
                assert hit is None
                model.append(node)
                model.sort(key=lambda n: n.iova)
        elif op < 0.45:                                       # insert where it is free
            if not overlapping(model, start, last):
                node = Node(start, last)
                tree.insert(node)
                model.append(node)
                model.sort(key=lambda n: n.iova)
        elif op < 0.6 and model:                              # remove_exact of a node
            node = rng.choice(model)
            assert tree.remove_exact(node.iova, node.last) is node
            model.remove(node)
        elif op < 0.68:                                       # remove_exact of any range
            want = [n for n in model if n.iova == start and n.last == last]
            got = tree.remove_exact(start, last)
            assert got is (want[0] if want else None)
            if want:
                model.remove(want[0])
        elif op < 0.78 and model:                             # remove
            node = rng.choice(model)
            tree.remove(node)
            model.remove(node)
        elif op < 0.8:
            with pytest.raises(KeyError):
                tree.remove(Node(start, last))
        elif op < 0.99:                                       # lookups and walks
            found = [n for n in model if n.iova <= start <= n.last]
            assert tree.find(start) is (found[0] if found else None)
            want = overlapping(model, start, last)
            first = tree.first_overlap(start, last)
            assert (first in want) if want else first is None
            assert tree.overlapping(start, last) == want
            assert list(tree.iter_from(start)) == [n for n in model if n.last >= start]
            holes, cur = [], start
            for n in want:
                if n.iova > cur:
                    holes.append((cur, n.iova - 1))
                cur = n.last + 1
            if cur <= last:
                holes.append((cur, last))
            assert list(tree.holes(start, last)) == holes
        else:
            assert tree.clear() == model
            model = []
        check_invariants(tree, model)
