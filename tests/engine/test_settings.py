"""vLLM's socket files go into a directory of the engine process's own (upft_ray/engine/settings.py
``use_own_rpc_dir``): vLLM leaves them in the temp dir when an engine ends, so a node that restarts engine actors
would collect thousands. The user's ``VLLM_RPC_BASE_PATH`` wins; one inherited from another process is not used
(its owner removes it); those of processes that are gone are removed."""

import os

import pytest
from drills import gone_pid

from upft_ray.engine.reaper import RPC_PREFIX
from upft_ray.engine.settings import use_own_rpc_dir
from upft_ray.runtime.scratch import remove_scratch


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.delenv("VLLM_RPC_BASE_PATH", raising=False)
    return tmp_path


def test_an_engine_process_gets_a_directory_of_its_own_and_keeps_it_for_its_next_engine(temp_dir):
    first = use_own_rpc_dir()
    assert first.parent == temp_dir and first.name.startswith(f"{RPC_PREFIX}{os.getpid()}-") and first.is_dir()
    assert os.environ["VLLM_RPC_BASE_PATH"] == str(first)
    assert use_own_rpc_dir() == first
    remove_scratch(first)


def test_the_users_directory_is_used_as_it_is(temp_dir, monkeypatch):
    monkeypatch.setenv("VLLM_RPC_BASE_PATH", str(temp_dir / "mine"))
    assert use_own_rpc_dir() is None and os.environ["VLLM_RPC_BASE_PATH"] == str(temp_dir / "mine")


def test_a_directory_inherited_from_another_process_is_replaced_and_a_dead_ones_removed(temp_dir, monkeypatch):
    orphan = temp_dir / f"{RPC_PREFIX}{gone_pid()}-abc"
    parents = temp_dir / f"{RPC_PREFIX}{os.getppid()}-def"
    for folder in (orphan, parents):
        folder.mkdir()
        (folder / "0000b125-7ede-43b4-b5d5-c7cd43d94d4d").touch()
    monkeypatch.setenv("VLLM_RPC_BASE_PATH", str(parents))
    own = use_own_rpc_dir()
    assert own.name.startswith(f"{RPC_PREFIX}{os.getpid()}-") and os.environ["VLLM_RPC_BASE_PATH"] == str(own)
    assert not orphan.exists() and parents.is_dir()  # the parent lives: its directory is its own to remove
    remove_scratch(own)
