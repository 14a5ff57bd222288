"""Hugging Face ``Trainer`` with surm adapters: checkpoints hold only the adapter, and load back.

A plain ``Trainer`` already trains an adapted model and writes only its adapter
(``adapter_config.json`` + ``adapter_model.safetensors``) at each checkpoint and in
``save_model``, because an adapted model's ``save_pretrained`` writes its adapter. What the plain
``Trainer`` cannot do is read such a checkpoint back: ``resume_from_checkpoint`` and
``load_best_model_at_end`` look for whole-model weights. :class:`AdapterTrainer` reads the adapter.

This module imports ``transformers.Trainer`` (which needs ``accelerate``); ``surm_core`` imports
it only when ``surm_core.AdapterTrainer`` is first used.
"""
from __future__ import annotations

from transformers import Trainer

from .io import adapter_tensors, load_tensors, read_adapter
from .model import adapter_config, adapter_state


class AdapterTrainer(Trainer):
    """``transformers.Trainer`` for a model adapted with :func:`surm_core.inject`.

    Same arguments and use as ``Trainer``; ``train(resume_from_checkpoint=...)`` and
    ``TrainingArguments(load_best_model_at_end=True)`` load the active adapter (and its modules to
    save) from the checkpoint into the model, after checking that the checkpoint's adapter config
    is the model's.

    >>> trainer = AdapterTrainer(model=inject(model, config), args=args, train_dataset=data)  # doctest: +SKIP
    >>> trainer.train(); trainer.save_model("out")  # out/ holds the adapter only   # doctest: +SKIP
    """

    def __init__(self, model=None, *args, **kwargs):
        adapter_state(model)  # ValueError unless the model has adapters
        super().__init__(model, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        _load_checkpoint(self.accelerator.unwrap_model(model if model is not None else self.model),
                         resume_from_checkpoint)

    def _load_best_model(self):
        _load_checkpoint(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)


def _load_checkpoint(model, directory) -> None:
    """Load the active adapter's tensors from a checkpoint ``directory`` of the same run."""
    config, stored = read_adapter(directory)
    active = adapter_config(model)
    if config != active:
        raise ValueError(
            f"the adapter in {str(directory)!r} was made with {config}, but the model's active adapter "
            f"with {active}; resume with the model and adapter config of that run"
        )
    load_tensors(adapter_tensors(model, adapter_state(model).active), stored)
