"""What the three tasks share: the data module they evaluate with, gathering decoded outputs
across ranks, optimizer and scheduler wiring, W&B summaries, and the data state that checkpoints
carry so that a predictor can be rebuilt from them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.loggers import WandbLogger

from datamodules.images import load_image
from zoo.checkpoint import local_checkpoint, read_checkpoint, weights_mismatch
from zoo.classpath import resolve_class
from zoo.errors import CheckpointError, DataError, UserError
from zoo.files import one_line
from zoo.plots import figure_to_array
from zoo.predict import is_published, read_published
from zoo.predict.captioning import attention_overlays
from zoo.predict.translation import alignment_plot
from zoo.published import load_state


def trainer_data(module: pl.LightningModule, needs: str, what: str) -> Any:
    """The trainer's data module, checked to have attribute ``needs``.

    Raises:
        UserError: no data module (or not the right one); ``what`` says which is needed and why.
    """
    datamodule = getattr(module._trainer, "datamodule", None) if module._trainer else None
    if datamodule is None or not hasattr(datamodule, needs):
        raise UserError(f"{what}: pass datamodule= to the trainer")
    return datamodule


def world_size() -> int:
    """Processes in the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_by_index(pairs: list[tuple[int, Any]]) -> dict[int, Any]:
    """Every rank's ``(index, value)`` pairs, on every rank, sorted by index; an index decoded
    twice (a padded sampler) counts once."""
    if world_size() > 1:
        parts: list[Any] = [None] * world_size()
        dist.all_gather_object(parts, pairs)
        pairs = [pair for part in parts for pair in part]
    return dict(sorted(pairs))


def broadcast_from_zero(value: Any) -> Any:
    """``value`` as rank 0 has it, on every rank."""
    box = [value]
    if world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def set_summary(module: pl.LightningModule, key: str, value: Any) -> None:
    """A value in the W&B run summary (rank 0; other ranks' experiments are dummies)."""
    for logger in module.loggers:
        if isinstance(logger, WandbLogger) and module.global_rank == 0:
            logger.experiment.summary[key] = value


def optimizers(
    module: pl.LightningModule,
    optimizer: Callable,
    lr_scheduler: Callable | None = None,
    interval: str = "epoch",
    frequency: float = 1,
) -> Any:
    """``configure_optimizers`` from injected callables (LightningCLI's ``OptimizerCallable``):
    the scheduler is stepped every ``frequency`` ``interval`` s; a fraction of an epoch
    (``0.5``: every half epoch, Sutskever et al. 2014) becomes that many training batches."""
    try:
        opt = optimizer(module.parameters())
    except ValueError as err:  # torch.optim checks its settings: "Invalid learning rate: -1.0"
        raise UserError(f"model.init_args.optimizer: {err}") from None
    if lr_scheduler is None:
        return opt
    if frequency < 1:  # a fraction of an epoch, in this run's training batches per epoch
        trainer = module.trainer
        if trainer.train_dataloader is None:  # as estimated_stepping_batches, with max_epochs -1
            trainer.fit_loop.setup_data()
        if not math.isfinite(trainer.num_training_batches):
            raise UserError(
                f"scheduler_frequency={frequency} is a fraction of an epoch, but the training "
                "loader has no length; give a whole number of epochs or steps"
            )
        interval, frequency = "step", max(1, int(trainer.num_training_batches * frequency))
    config = {"scheduler": lr_scheduler(opt), "interval": interval, "frequency": int(frequency)}
    return {"optimizer": opt, "lr_scheduler": config}


def check_frequency(interval: str, frequency: float) -> None:
    """A whole number of intervals, or a fraction of an epoch below 1.

    Raises:
        UserError: anything else.
    """
    if frequency <= 0 or (frequency != int(frequency) and (interval != "epoch" or frequency > 1)):
        raise UserError(
            "scheduler_frequency must be a whole number of intervals, or a fraction of an "
            f"epoch below 1; got {frequency} with interval {interval!r}"
        )


def save_data_state(module: pl.LightningModule, checkpoint: dict) -> None:
    """The data module's state (vocabularies, tokeniser models) and settings into
    ``checkpoint``: what a predictor needs to read new input and write output as in training."""
    datamodule = getattr(module._trainer, "datamodule", None) if module._trainer else None
    if datamodule is not None and hasattr(datamodule, "state_dict"):
        checkpoint["data_state"] = datamodule.state_dict()
        hparams = getattr(datamodule, "hparams", {})  # LightningCLI adds a _class_path
        checkpoint["data_hparams"] = {k: v for k, v in hparams.items() if not k.startswith("_")}


def check_linked(what: str, model_value: Any, data_value: Any) -> None:
    """The model was built for this data: what the CLI links (vocabulary sizes) must agree.

    Raises:
        DataError: one line with both values.
    """
    if model_value != data_value:
        raise DataError(
            f"the model's {what} has {model_value} but the data's has {data_value}; train and "
            "evaluate on the same data, and let the CLI link it from the data"
        )


def model_hparams(task: str, model: Any, **extra: Any) -> dict[str, Any]:
    """What a checkpoint records of a task's model: JSON-able values only, so that it loads
    with ``weights_only=True`` and a predictor can rebuild the model from it."""
    cls = type(model)
    return {
        "task": task,
        "model": model.config(),
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        **extra,
    }


def logging_step(module: pl.LightningModule) -> bool:
    """Whether this training step's values reach the loggers (every ``log_every_n_steps``, and
    the last step): a task logs its per-step values only then. Each ``self.log`` costs Lightning
    about 0.7 ms (it moves its stored metric to the value's device), a tenth of a GPU step, while
    the values of the other steps are never written. The progress bar and callbacks see the last
    logged value (a ``ModelCheckpoint`` on ``train/loss`` should save on logging steps)."""
    trainer = module._trainer
    if trainer is None:
        return True
    connector = getattr(trainer, "_logger_connector", None)
    last = 0 < trainer.max_steps <= trainer.global_step + 1 or (
        trainer.is_last_batch and trainer.current_epoch + 1 >= (trainer.max_epochs or 0) > 0
    )
    return bool(getattr(connector, "should_update_logs", True) or trainer.fast_dev_run or last)


def log_images(module: pl.LightningModule, key: str, images: list, captions: list[str]) -> None:
    """Images to every logger that takes them (W&B's ``log_image``)."""
    for logger in module.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=images, step=module.global_step, caption=captions)


def use_feature_cache(trainer: pl.Trainer, datamodule: Any, encoder: Any, stage: str) -> None:
    """Have the data run the frozen CNN once (or read its saved features), so batches carry
    features and the model skips the CNN. Every rank builds its share of the pictures."""
    datamodule.use_feature_cache(
        encoder, stage, trainer.strategy.root_device, trainer.global_rank, trainer.world_size,
        lambda: trainer.strategy.barrier("feature_cache"),
    )  # fmt: skip


def task_from_checkpoint(cls: type, path: Any, map_location: Any = None, **overrides: Any) -> Any:
    """``cls.load_from_checkpoint(path)`` for an rnn-zoo task: the checkpoint is read safely
    (:func:`zoo.checkpoint.read_checkpoint`), the task rebuilt from what its hyperparameters
    record (the model's config; optimizer and schedule at their defaults unless ``overrides``
    give them), its weights and task state loaded."""
    checkpoint = read_checkpoint(path, cls.task_name, map_location or "cpu")
    task = cls(**{**cls.init_args(checkpoint["hyper_parameters"]), **overrides})
    task.load_state_dict(checkpoint["state_dict"])
    task.on_load_checkpoint(checkpoint)
    return task


class InitWeights:
    """Weights a fit starts from (``--init_from``): a training checkpoint, or a published name
    or ``.safetensors`` file, read once; fine-tuning starts from them with a fresh optimizer,
    schedule and step count.

    Attributes:
        extras: what came with the weights: the vocabulary, and the ``data_state``
            (vocabularies, tokeniser models) that the data module reads new text with.

    Raises:
        CheckpointError, PretrainedError: another task's weights; a missing or damaged file.
    """

    def __init__(self, path: Any, task_name: str | None) -> None:
        self.path = path
        if is_published(path):
            published = read_published(path, task_name)
            self.state, self.whole_task = published.state, False  # the task's .model
            self.extras = dict(published.extras)
        else:
            checkpoint = read_checkpoint(local_checkpoint(path), task_name, origin=str(path))
            self.state, self.whole_task = checkpoint["state_dict"], True
            skip = (*TRAINING_STATE, "state_dict")
            self.extras = {k: v for k, v in checkpoint.items() if k not in skip}

    @property
    def data_state(self) -> dict[str, Any] | None:
        return self.extras.get("data_state") or None

    def load_into(self, task: pl.LightningModule, datamodule: Any = None) -> None:
        """The weights into ``task``, strictly, once the task's ``check_data`` (if it has one)
        has accepted ``datamodule``: a char model names the characters that differ, rather
        than the shapes that follow from their number.

        Raises:
            CheckpointError: weights of another shape, or missing or unexpected ones.
            DataError: data the weights cannot read.
        """
        task.on_load_checkpoint(self.extras)  # the vocabulary they came with
        if datamodule is not None and hasattr(task, "check_data"):
            task.check_data(datamodule)
        advice = "pass the settings they were trained with (a run folder's config.yaml has them)"
        if self.whole_task and (why := weights_mismatch(task.state_dict(), self.state)):
            raise CheckpointError(f"{self.path}: weights do not fit this model ({why}); {advice}")
        try:
            if self.whole_task:
                task.load_state_dict(self.state)
            else:
                load_state(task.model, self.state)
        except (RuntimeError, ValueError) as err:
            message = one_line(err)
            raise CheckpointError(
                f"{self.path}: weights do not fit this model ({message}); {advice}"
            ) from None


#: What a checkpoint holds of the run's progress rather than of the model (not for --init_from).
TRAINING_STATE = (
    "tbptt_state", "rng_state", "cuda_rng_state", "optimizer_states", "lr_schedulers", "loops"
)  # fmt: skip


def save_rng_state(checkpoint: dict) -> None:
    """The random streams as they are at this step (dropout's), so that a fit resumed from the
    checkpoint draws what the uninterrupted fit would have. Every rank's equal the saving one's:
    seed_everything starts them alike and they draw alike."""
    checkpoint["rng_state"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state()


def load_rng_state(task: pl.LightningModule, checkpoint: dict) -> None:
    """:func:`save_rng_state`'s streams back, when a trainer resumes the fit (a model loaded to
    be used leaves the process's random streams alone)."""
    if task._trainer is None:
        return
    if "rng_state" in checkpoint:
        torch.set_rng_state(checkpoint["rng_state"])
    if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])


class FromCheckpoint:
    """``Task.load_from_checkpoint(path)`` for the rnn-zoo tasks, whose checkpoints record the
    model's JSON config rather than ``__init__`` arguments (they load with ``weights_only``).
    A task sets ``task_name`` and ``init_args(hparams)``."""

    task_name: str

    @classmethod
    def init_args(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any):
        kwargs.pop("hparams_file", None), kwargs.pop("strict", None)
        return task_from_checkpoint(cls, checkpoint_path, map_location, **kwargs)


def model_init_args(hparams: dict[str, Any], base: type, sizes: tuple[str, ...]) -> dict:
    """The sizes and model factory that rebuild a checkpoint's model (``model_class`` from
    ``config``): what a sequence task's ``__init__`` takes."""
    model_class = resolve_class(hparams.get("model_class"), base, "zoo.models.")
    config = hparams["model"]
    return {**{k: config[k] for k in sizes}, "model": lambda *_: model_class.from_config(config)}


def log_caption_table(task: pl.LightningModule, split: str, by_id: dict[int, list[str]]) -> None:
    """A W&B table of a few pictures with their generated and reference captions."""
    loggers = [lg for lg in task.loggers if isinstance(lg, WandbLogger)]
    if not (loggers and task.examples > 0) or task.global_rank or task.trainer.sanity_checking:
        return
    import wandb

    datamodule = task._data()
    references, paths = datamodule.references(split), datamodule.splits[split].paths
    examples = list(by_id.items())[: task.examples]  # the same pictures each time
    rows = [
        [i, wandb.Image(str(paths[i])), " ".join(words), "\n".join(references[i])]
        for i, words in examples
    ]
    columns = ["image_id", "image", "generated", "references"]
    if hasattr(task.model, "forward_with_attention"):  # Show, Attend and Tell: overlays
        columns.append("attention")
        pictures = [load_image(paths[i]) for i, _ in examples]
        captions = [words for _, words in examples]
        figures = attention_overlays(
            task.model, datamodule.vocab, pictures, captions, datamodule.transform
        )
        for row, figure in zip(rows, figures):
            row.append(wandb.Image(figure))
    for logger in loggers:
        logger.log_table(key=f"{split}/captions", columns=columns, data=rows, step=task.global_step)


def log_attention(task: pl.LightningModule, batch: Any, best: list[list[int]]) -> None:
    """Attention matrices of a few sentences, as images, to loggers that take them."""
    wanted = any(hasattr(lg, "log_image") for lg in task.loggers) and task.attention_examples
    if not wanted or task.global_rank != 0 or task.trainer.sanity_checking:
        return
    n = min(task.attention_examples, len(batch))
    src, lengths = batch.src[:n], batch.src_lengths[:n]
    figures = alignment_plot(task.model, task._data(), src, lengths, best[:n]) or []
    images = [figure_to_array(fig) for fig in figures]
    captions = [f"sentence {int(i)}" for i in batch.index[:n]]
    if images:
        log_images(task, "val/attention", images, captions)
