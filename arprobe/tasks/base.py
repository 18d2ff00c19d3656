"""The task seam: documents in, a training batch and its loss out, and the eval loss of all documents.

A task holds its T documents (on the model's device) and knows how the model consumes them. The
episode step (``arprobe.trainer.episode``) asks it for one batch per gradient step and for that
batch's loss; the loop asks it for a row of the eval matrix; the recorder asks it for the
per-document gradients and for the inputs whose activations are captured. Nothing outside a
task knows whether a document is text or an image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np
import torch


class Task(ABC):
    name: str = ""  # the config's task name, stored in the run
    n_docs: int  # T

    @abstractmethod
    def training_batch(self, doc: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One gradient step's input for document ``doc``, with the configured data randomness
        drawn from ``generator`` (the run's: replaying an episode draws the same)."""

    @abstractmethod
    def batch_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss of ``batch``."""

    @abstractmethod
    def eval_losses(
        self, model: torch.nn.Module, after_batch: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """Loss of every (clean) document [T]: one row of the eval matrix. ``after_batch(start, stop)``
        runs after the forward of documents start..stop-1 (activation hooks are read there)."""

    @abstractmethod
    def per_document_grads(
        self, model: torch.nn.Module, params: dict[str, torch.Tensor], *, chunk: int, method: str
    ) -> Iterator[list[torch.Tensor]]:
        """Gradient of each document's eval loss w.r.t. ``params``, ``chunk`` documents at a time:
        one [n, *shape] tensor per parameter, in ``params`` order."""

    @abstractmethod
    def forward_docs(self, model: torch.nn.Module, docs: list[int]) -> None:
        """One forward pass over the clean documents ``docs`` (activations are captured by hooks)."""

    @abstractmethod
    def store_arrays(self) -> dict[str, np.ndarray]:
        """What the run store keeps of the documents, ``docs/<name>`` -> array."""
