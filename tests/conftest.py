"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: tiny models gain nothing from more, threads contend on
    a busy machine, and a learning test's sums keep one order (so it is deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """Tests serve their downloads from 127.0.0.1: a user's ``RNN_ZOO_OFFLINE`` must not refuse
    them (the tests that check offline behaviour set it themselves)."""
    monkeypatch.delenv("RNN_ZOO_OFFLINE", raising=False)
