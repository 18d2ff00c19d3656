"""The task seam: documents in, a training batch and its loss out, and the eval loss of all documents.

A task is a plugin of the ``arprobe.tasks`` entry-point group (``arprobe.tasks.registry``); the
built-ins are declared there exactly as a third-party task is. Its class is the whole lifecycle:

    prepared = TaskClass.prepare(cfg)                  # data, model, layer names: a run's setup
    task = TaskClass.from_store(store, cfg, model=..., device=...)   # the same task from a store
    model = TaskClass.model_from_info(store.model_info, cfg)         # its architecture, no weights
    TaskClass.validate_config(cfg)                     # refuses options that mean nothing to it
    TaskClass.position_mask(store.doc_arrays(), T, P)     # which input positions are real [T, P]

A task instance holds its T documents (on the model's device) and knows how the model consumes
them. The episode step (``arprobe.trainer.episode``) asks it for one batch per gradient step and
for that batch's loss; the loop asks it for a row of the eval matrix; the recorder asks it for
the per-document gradients and for the inputs whose activations are captured. Nothing outside a
task knows whether a document is text or an image, and nothing tests a task's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the registry imports this module, and it must stay light
    import torch

    from arprobe.models.naming import ModelNames


@dataclass
class Prepared:
    """What a task builds from a run config: everything the loop needs but the schedule."""

    model: torch.nn.Module
    names: ModelNames  # TransformerLens names of the model's parts (recordings, grad-norm groups)
    task: Task
    texts: list[str]  # one line per document for people (docs/text)
    model_info: dict  # the store's ``model`` attributes: enough for ``model_from_info``
    device: torch.device
    data_provenance: str  # where the documents came from, in words
    n_dropped: int = 0  # documents skipped as too short
    tokenizer: object = None  # text tasks: the tokenizer (names hooks by token); None otherwise


class Task(ABC):
    name: str = ""  # the config's task name, stored in the run
    n_docs: int  # T
    # Members of a batched (vmapped) model may share this task's eval pass (batched seeds and
    # pairwise replays): the task has text's ``eval_tokens``/``eval_lengths``/``ignore_id``.
    stacks: bool = False
    # The task keeps token windows [T, C + 2 * max_shift] (memory and store estimates count them).
    keeps_token_windows: bool = False
    # What the documents are, one line for the run's summary ("4 batches of 32 images (8x8)");
    # empty: the summary counts text documents dropped and padded.
    data_note: str = ""

    # --- the lifecycle, on the class -------------------------------------------------------

    @classmethod
    @abstractmethod
    def prepare(cls, cfg) -> Prepared:
        """Documents, model, names and the task itself from a RunConfig, before the first episode."""

    @classmethod
    @abstractmethod
    def from_store(cls, store, cfg, *, model: torch.nn.Module, device: torch.device) -> Task:
        """The run's task rebuilt from its store (``store.doc_arrays()``, ``store.model_info``), for
        resumes and replays; ``model`` is the rebuilt model (its dtype, for instance)."""

    @classmethod
    @abstractmethod
    def model_from_info(cls, info: dict, cfg) -> torch.nn.Module:
        """The run's architecture from the store's ``model`` info, frozen and dropout-free as the
        run's was; its weights come from a checkpoint after. Never runs a model's own code."""

    @classmethod
    def validate_config(cls, cfg) -> None:
        """Refuse, in one sentence (UserError), options that mean nothing for this task."""
        return None

    @classmethod
    def position_mask(cls, arrays: dict[str, np.ndarray], n_docs: int, n_positions: int) -> np.ndarray:
        """bool [T, n_positions]: which positions of each document's clean input are real (not
        padding), from the ``docs/*`` arrays the task stored. Probes pool activations over them.
        By default every position is real."""
        return np.ones((n_docs, n_positions), dtype=bool)

    # --- one run's documents ----------------------------------------------------------------

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
