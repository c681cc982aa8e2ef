"""single_thread: one intra-op thread inside the block, the caller's count restored after it."""

import pytest
import torch

from psipo._threads import single_thread


def test_single_thread_restores_the_thread_count_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), single_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside the block")
    assert torch.get_num_threads() == before


def test_single_thread_is_one_thread_whatever_the_caller_had():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
