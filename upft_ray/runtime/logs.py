"""What a run prints: one logger per stage (``upft.sample``, ``upft.train``, ``upft.eval.*``, ...), and the
libraries underneath kept quiet unless asked.

A normal run prints our progress lines and results; warnings and errors of ours, and every real failure
(an exception, a refused config), print in full. Ray's and vLLM's internals (engine start-up chatter,
Ray Data's progress tables, Ray Train's worker-group lines, library deprecation warnings, DeepSpeed's op
builder) are left to their log files unless ``--verbose`` asks for them; ``--quiet`` keeps only
warnings and errors. Workers get the same policy through their environment (``worker_env``), set
before Ray starts them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading

VERBOSITY_ENV = "UPFT_VERBOSITY"  # -1 quiet, 0 normal, 1 verbose: travels to Ray workers
QUIET, NORMAL, VERBOSE = -1, 0, 1


class StageFormatter(logging.Formatter):
    """``[sample] message``: the logger's name without the ``upft.`` prefix."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("upft.") if record.name != "upft" else "upft"
        text = f"[{name}] {record.getMessage()}"
        if record.levelno >= logging.WARNING:
            text = f"[{name}] {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def verbosity() -> int:
    """Return this process's verbosity (``UPFT_VERBOSITY``; normal when unset)."""
    try:
        return max(QUIET, min(VERBOSE, int(os.environ.get(VERBOSITY_ENV, "0"))))
    except ValueError:
        return NORMAL


def _handler(stream) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(StageFormatter())
    return handler


def configure_logging(level: int = NORMAL) -> None:
    """Set up the driver's logging for ``level`` (QUIET, NORMAL or VERBOSE) and remember it for the workers."""
    os.environ[VERBOSITY_ENV] = str(level)
    logger = logging.getLogger("upft")
    logger.handlers[:] = [_handler(sys.stderr)]
    logger.setLevel({QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}[level])
    logger.propagate = False
    if level < VERBOSE:
        for noisy in ("ray", "ray.data", "ray.train", "ray.tune", "DeepSpeed", "vllm", "transformers", "filelock"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.update({k: v for k, v in quiet_env().items() if k not in os.environ})


def configure_worker_logging() -> None:
    """Set up logging in a Ray worker or a torchrun rank (stdout, which Ray forwards to the driver once)."""
    level = verbosity()
    logger = logging.getLogger("upft")
    if not logger.handlers:
        logger.addHandler(_handler(sys.stdout))
    logger.setLevel({QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}[level])
    logger.propagate = False
    if level < VERBOSE:
        for noisy in ("DeepSpeed", "vllm", "transformers", "ray.train", "ray.data"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def quiet_env() -> dict[str, str]:
    """Return the env that keeps the libraries' internals quiet in a normal run (none when verbose)."""
    if verbosity() >= VERBOSE:
        return {}
    return {
        "VLLM_LOGGING_LEVEL": "ERROR",
        "TRANSFORMERS_VERBOSITY": "error",
        "TQDM_DISABLE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONWARNINGS": "ignore",  # library deprecation chatter; our failures are exceptions, not warnings
        "TORCH_CPP_LOG_LEVEL": "ERROR",  # torch's C++ notices (NUMA binding on CPU)
    }


def library_level() -> int:
    """Return the level the libraries' own loggers (Ray, Ray Data, vLLM) run at: INFO when verbose, else ERROR."""
    return logging.INFO if verbosity() >= VERBOSE else logging.ERROR


def worker_env() -> dict[str, str]:
    """Return the logging env every Ray worker of a run gets."""
    return {VERBOSITY_ENV: str(verbosity()), **quiet_env()}


# Lines Ray's C++ core writes straight to the driver's stderr that say nothing a user can act on. Ray Data
# hands each actor of a pool its function through the object store and holds that reference for the
# pool's life, yet Ray's core warns once per driver that a restart could lose it (ray-project/ray#53727).
KNOWN_RAY_NOTICES = (
    re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store and "
               r"max_restarts > 0"),
)


@contextlib.contextmanager
def quiet_native_stderr(patterns=KNOWN_RAY_NOTICES):
    """Drop the lines matching ``patterns`` that this process's native code writes to stderr inside the block
    (everything else passes through, in order); nothing is dropped when verbose."""
    if verbosity() >= VERBOSE:
        yield
        return
    sys.stderr.flush()
    saved, (read_end, write_end) = os.dup(2), os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    copier = threading.Thread(target=_copy_lines, args=(read_end, saved, patterns), daemon=True)
    copier.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the copier reads to the end and stops
        copier.join(timeout=10)
        os.close(saved)


def _copy_lines(read_end: int, out: int, patterns) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if not any(p.search(line.decode("utf-8", "replace")) for p in patterns):
                os.write(out, line)


@contextlib.contextmanager
def library_output(logger: logging.Logger):
    """Capture what a library prints to stdout inside the block (DeepSpeed's op builder) and log it at DEBUG."""
    if verbosity() >= VERBOSE:
        yield
        return
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        logger.debug("%s", line)
