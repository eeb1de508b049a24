"""Run by tests/test_train.py under torchrun: train, then save this rank's teacher to $CROC_TEST_DUMP."""

import os

import torch

from croc_utils.distributed import get_rank
from croc_utils.parser import parse_args
from main_croc import train_croc

if __name__ == "__main__":
    args = parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    rank = int(os.environ["RANK"])
    _, teacher = train_croc(args)
    torch.save(teacher.state_dict(), os.path.join(os.environ["CROC_TEST_DUMP"], f"teacher_rank{rank}.pt"))
    assert get_rank() == 0  # the process group is destroyed after training
