"""Which config owns a train directory: operational settings (checkpoint cadence, failure budget, logging, CPUs per
worker) do not make another run, a directory written before they were left out of the hash is still its config's,
and a run of another config is refused."""

from pathlib import Path

import pytest

from upft_ray.config import load_config
from upft_ray.config.hashing import OPERATIONAL, train_config_hash, train_config_hashes
from upft_ray.io.manifests import read_json, write_json_atomic
from upft_ray.training import stage

OPERATIONAL_CHANGES = {"checkpoint_every_steps": "7", "max_failures": "9", "keep_last_k": "5", "log_every_steps": "3",
                       "cpus_per_worker": "2", "tensorboard": "true"}


def _cfg(tmp_path: Path, *overrides: str):
    return load_config(None, [f"run_dir={tmp_path / 'run'}", *overrides])


def _with_checkpoint(cfg) -> Path:
    """Make RUN/train/ray hold a Ray Train checkpoint; return that checkpoint directory."""
    ckpt = stage.checkpoints_dir(cfg) / stage.RUN_NAME / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    return ckpt


def test_every_operational_train_setting_is_named_here():
    assert set(OPERATIONAL["train"]) == set(OPERATIONAL_CHANGES)


@pytest.mark.parametrize("field, value", OPERATIONAL_CHANGES.items())
def test_operational_settings_leave_the_train_hash_alone(tmp_path, field, value):
    assert train_config_hash(_cfg(tmp_path, f"train.{field}={value}"), "s") == train_config_hash(_cfg(tmp_path), "s")


@pytest.mark.parametrize("override", ["train.learning_rate=1e-4", "train.epochs=2", "train.micro_batch_size=2",
                                      "train.num_workers=1", "seed=7", "train.packing=false"])
def test_what_changes_the_trained_weights_changes_the_train_hash(tmp_path, override):
    assert train_config_hash(_cfg(tmp_path, override), "s") != train_config_hash(_cfg(tmp_path), "s")
    assert train_config_hash(_cfg(tmp_path), "s") != train_config_hash(_cfg(tmp_path), "another sample")


@pytest.mark.parametrize("field, value", OPERATIONAL_CHANGES.items())
def test_a_half_trained_run_resumes_with_other_operational_settings(tmp_path, field, value):
    first = _cfg(tmp_path)
    stage.claim_train_dir(first, *train_config_hashes(first, "s"))
    ckpt = _with_checkpoint(first)
    again = _cfg(tmp_path, f"train.{field}={value}")
    stage.claim_train_dir(again, *train_config_hashes(again, "s"))
    assert ckpt.is_dir()  # kept, to be resumed


def test_a_directory_claimed_under_the_old_hash_is_still_its_configs(tmp_path):
    cfg = _cfg(tmp_path)
    new, legacy = train_config_hashes(cfg, "s")
    assert new != legacy
    owner = cfg.run_path / "train" / "run_config.json"
    write_json_atomic(owner, {"config_hash": legacy})
    ckpt = _with_checkpoint(cfg)
    stage.claim_train_dir(cfg, new, legacy)
    assert ckpt.is_dir() and read_json(owner)["config_hash"] == new


def test_a_finished_run_under_the_old_hash_is_reused(tmp_path):
    cfg = _cfg(tmp_path)
    new, legacy = train_config_hashes(cfg, "s")
    train_dir = cfg.run_path / "train"
    (train_dir / "final").mkdir(parents=True)
    write_json_atomic(train_dir / "manifest.json", {"config_hash": legacy, "final_model": str(train_dir / "final")})
    assert stage._finished(train_dir, (new, legacy))["config_hash"] == legacy
    write_json_atomic(train_dir / "manifest.json", {"config_hash": "another", "final_model": str(train_dir / "final")})
    assert stage._finished(train_dir, (new, legacy)) is None


@pytest.mark.parametrize("override", ["train.learning_rate=1e-4", "train.epochs=2"])
def test_a_half_trained_run_of_another_config_is_refused(tmp_path, override):
    first = _cfg(tmp_path)
    stage.claim_train_dir(first, *train_config_hashes(first, "s"))
    ckpt = _with_checkpoint(first)
    other = _cfg(tmp_path, override)
    with pytest.raises(ValueError, match="holds a training run with another config"):
        stage.claim_train_dir(other, *train_config_hashes(other, "s"))
    assert ckpt.is_dir()


def test_a_run_of_another_config_without_a_checkpoint_is_cleared(tmp_path):
    first = _cfg(tmp_path)
    stage.claim_train_dir(first, *train_config_hashes(first, "s"))
    (stage.checkpoints_dir(first) / stage.RUN_NAME).mkdir(parents=True)
    other = _cfg(tmp_path, "train.learning_rate=1e-4")
    stage.claim_train_dir(other, *train_config_hashes(other, "s"))
    assert not stage.checkpoints_dir(first).exists()
