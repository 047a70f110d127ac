"""What every training command shares: the run directory, its loop, exact resume.

A run directory holds ``last.ckpt`` (plain containers, so ``torch.load(weights_only=True)``
reads it), ``log.jsonl`` (one JSON record per step and per validation) and, at the end, the
inference weights. Every random draw of step s is a function of (seed, s) alone, so there is
no random state to save and a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.errors import UserError

CHECKPOINT = "last.ckpt"
LOG = "log.jsonl"
WEIGHTS = "weights.safetensors"
#: Random streams under one seed: training steps, and the fixed validation set.
TRAIN_STREAM, VALIDATION_STREAM = 0, 1


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite; the last checkpoint stays as it was."""


class Schedule(Protocol):
    """When things happen in a run (the training settings carry these)."""

    steps: int
    val_every: int
    ckpt_every: int


def step_rng(seed: int, stream: int, step: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, step])


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU generator seeded from ``rng``: draws are the same whatever device trains."""
    return torch.Generator().manual_seed(int(rng.integers(2**63)))


class Run(ABC):
    """A run directory and its loop; subclasses say what one step, a validation and a
    checkpoint are. Start or resume one through :func:`open_run_dir`."""

    def __init__(self, run_dir: Path, schedule: Schedule, resumable: Collection[str]) -> None:
        self.run_dir, self.schedule, self.resumable = run_dir, schedule, resumable
        self.step = 0

    @property
    @abstractmethod
    def hyper_parameters(self) -> dict[str, Any]:
        """Everything that decides what is learnt, as plain containers by section."""

    @property
    @abstractmethod
    def validates(self) -> bool:
        """Whether there is anything to validate on."""

    @abstractmethod
    def train_step(self) -> dict[str, float]:
        """Do step ``self.step + 1`` and return its log record (``step`` included)."""

    @abstractmethod
    def validate(self) -> dict[str, float]:
        """Score the current weights; the log record (``step`` included)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The checkpoint's weights and optimiser states (plain containers)."""

    @abstractmethod
    def load_state(self, checkpoint: Mapping[str, Any]) -> None:
        """Put the weights and optimiser states of a checkpoint back."""

    def run(
        self,
        stop: Callable[[], bool] = lambda: False,
        report: Callable[[dict[str, float]], None] = lambda record: None,
    ) -> bool:
        """Train up to ``steps``, logging every step; checkpoint periodically, when ``stop()``
        turns true (checked between steps) and at the end. False when stopped."""
        s = self.schedule
        while self.step < s.steps:
            if stop():
                self.save()
                return False
            record = self.train_step()
            self._log(record)
            report(record)
            last = self.step == s.steps
            if self.validates and (self.step % s.val_every == 0 or last):
                record = self.validate()
                self._log(record)
                report(record)
            if self.step % s.ckpt_every == 0 and not last:
                self.save()
        self.save()
        return True

    def _log(self, record: Mapping[str, float]) -> None:
        with open(self.run_dir / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")

    def checkpoint(self) -> dict[str, Any]:
        return {"global_step": self.step, **self.state(), "hyper_parameters": self.hyper_parameters}

    def save(self) -> Path:
        """Write ``last.ckpt`` atomically: a kill mid-write leaves the previous one."""
        path = self.run_dir / CHECKPOINT
        tmp = path.with_suffix(".ckpt.part")
        torch.save(self.checkpoint(), tmp)
        os.replace(tmp, path)
        return path

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue from a checkpoint of this run; refuse one made with other settings."""
        same_settings(
            checkpoint["hyper_parameters"], self.hyper_parameters, self.run_dir, self.resumable
        )
        self.load_state(checkpoint)
        self.step = int(checkpoint["global_step"])
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop records of steps after the checkpoint: they are about to be done again."""
        path = self.run_dir / LOG
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line and json.loads(line)["step"] <= self.step
            ]
            path.write_text("".join(line + "\n" for line in kept))


def open_run_dir(run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``resume``) or None for a new run, whose directory is
    created and whose stale log is removed; a new run refuses a directory holding one."""
    path = run_dir / CHECKPOINT
    if resume and not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist")
    if not resume and path.exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume or choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the run directory {run_dir}: {err.strerror}") from None
    if resume:
        return torch.load(path, map_location="cpu", weights_only=True)
    (run_dir / LOG).unlink(missing_ok=True)
    return None


def same_settings(
    old: Mapping[str, Any], new: Mapping[str, Any], run_dir: Path, resumable: Collection[str]
) -> None:
    """Refuse, naming the first difference, settings other than ``resumable`` (names in the
    ``train`` section: they decide when things happen, not what is learnt)."""
    for section in sorted(old.keys() | new.keys()):
        before, now = _flatten(old.get(section)), _flatten(new.get(section))
        for key in sorted(before.keys() | now.keys()):
            if section == "train" and key.split(".")[0] in resumable:
                continue
            if before.get(key) != now.get(key):
                raise UserError(
                    f"{run_dir} was trained with {section} {key} = {before.get(key)!r}, "
                    f"not {now.get(key)!r}; resume with its settings or choose another --out"
                )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out
