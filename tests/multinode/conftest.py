"""Every multi-node test keeps its Ray files (sessions, sockets, the "current cluster" address file) in a
private temporary directory, so no other Ray on the machine sees or is touched by its clusters."""

from __future__ import annotations

import shutil
import tempfile

import pytest


@pytest.fixture(autouse=True)
def private_ray_tmpdir(monkeypatch):
    path = tempfile.mkdtemp(prefix="upft-mn-", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)
