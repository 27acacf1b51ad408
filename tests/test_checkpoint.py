import argparse
import pickle

import pytest
import torch

from disco_detr.checkpoint import DisCoCheckpointer


def test_pickled_objects_are_refused_unless_allowed(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "with_args.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=1)}, path)
    target = torch.nn.Linear(3, 2)
    with pytest.raises(pickle.UnpicklingError, match="with_args.pth.*checkpoint_allow_pickle"):
        DisCoCheckpointer(target).load(str(path))
    DisCoCheckpointer(target, allow_pickle=True).load(str(path))
    assert torch.equal(target.weight, model.weight)


def test_plain_checkpoints_load_safely(tmp_path):
    model = torch.nn.Linear(3, 2)
    DisCoCheckpointer(model, str(tmp_path)).save("m", iteration=7)
    target = torch.nn.Linear(3, 2)
    extra = DisCoCheckpointer(target).load(str(tmp_path / "m.pth"))
    assert torch.equal(target.bias, model.bias)
    assert extra["iteration"] == 7
