"""The contract both TFX Trainer modules keep, so that one rule holds for the CTC recogniser and
the speaker embedder alike:

* `custom_config` holds `features` (the feature job's FeatureConfig json), optionally
  `global_stats`, `warm_start` (default true) and one model section (`ctc` or `embedder`);
  any other key, here or inside the model section, is an error: a misspelt setting must not
  train silently on defaults.
* `fn_args.train_steps`, when set, caps the optimiser steps on top of the model's own budget.
* Warm start: `warm_start(build_fn, champion, restore)` builds the network and restores the
  champion's weights when the architecture agrees; otherwise the record says why it trained
  from scratch. The record sits inside the one result file, `training_result.json`, beside
  the SavedModel.
* `BestWeights`: one validation callback: evaluate every epoch (lower is better), keep and
  restore the best weights, stop on patience, on the wall-clock budget or on the step budget,
  the budgets checked after every batch; progress through `logging`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import tf_keras as keras

from speechpipe.config import FeatureConfig
from speechpipe.filenames import RESULT_FILE
from speechpipe.io import storage
from speechpipe.validation import ConfigError, reject_unknown

log = logging.getLogger(__name__)

COMMON_KEYS: Tuple[str, ...] = ("features", "global_stats", "warm_start")

NO_CHAMPION = "no champion yet"
SWITCHED_OFF = "warm start switched off"
RESTORED = "champion weights restored"
DIFFERS = "champion's architecture differs, trained from scratch"


@dataclass(frozen=True)
class TrainerInputs:
    """What a run_fn reads from TFX's fn_args, checked."""

    feature_config: FeatureConfig
    model_settings: Dict[str, Any]  # the model section of custom_config, for its config's from_json
    global_stats: Optional[Dict[str, Any]]
    champion: Optional[str]  # the champion's SavedModel folder (base_model), None when there is none
    warm_start: bool
    max_steps: int  # fn_args.train_steps, 0 = none


def read_inputs(fn_args, model_key: str) -> TrainerInputs:
    """custom_config and the base model of a Trainer run, with the unknown-key rule applied and
    the global statistics found beside the features when the normalisation needs them."""
    from speechpipe.components.registry_champion import champion_absent
    from speechpipe.training import find_global_stats

    custom = dict(fn_args.custom_config or {})
    known = COMMON_KEYS + (model_key,)
    reject_unknown(custom, known, f"custom_config (expected {', '.join(known)})")
    if "features" not in custom:
        raise ConfigError("custom_config needs 'features': the feature job's summary.json 'features' entry")
    feature_config = FeatureConfig.from_json(custom["features"])
    global_stats = custom.get("global_stats")
    if feature_config.normalization == "global" and not global_stats:
        global_stats = find_global_stats(list(fn_args.train_files) + list(fn_args.eval_files or []))
    champion = getattr(fn_args, "base_model", None) or None
    # A registry champion step publishes a Model artifact even when the registry has none.
    if champion and champion_absent(champion):
        log.info("the registry has no champion for this run: training from scratch")
        champion = None
    return TrainerInputs(
        feature_config,
        dict(custom.get(model_key) or {}),
        global_stats,
        champion,
        bool(custom.get("warm_start", True)),
        int(getattr(fn_args, "train_steps", 0) or 0),
    )


def tensorboard_dir(fn_args) -> Optional[str]:
    return storage.join(fn_args.model_run_dir, "tensorboard") if fn_args.model_run_dir else None


def run_trainer(
    fn_args, model_key: str, config_from_json: Callable[[Dict[str, Any]], Any], train: Callable[..., Any]
) -> None:
    """A Trainer module's run_fn: the inputs read by the contract, the model section parsed by
    `config_from_json`, train_steps as the step cap, then `train(train_files, eval_files,
    feature_config, serving_model_dir, log_dir, config, global_stats, champion,
    warm_start_enabled)`."""
    inputs = read_inputs(fn_args, model_key)
    config = config_from_json(inputs.model_settings)
    if inputs.max_steps:
        config = replace(config, max_steps=inputs.max_steps)
    train(
        fn_args.train_files,
        fn_args.eval_files,
        inputs.feature_config,
        fn_args.serving_model_dir,
        tensorboard_dir(fn_args),
        config,
        inputs.global_stats,
        inputs.champion,
        inputs.warm_start,
    )


@dataclass
class WarmStart:
    """Where the weights a run started from came from, and why."""

    warm_start: bool
    source: Optional[str]
    reason: str

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("source")
        return data


def warm_start(
    build_fn: Callable[[], keras.Model],
    champion: Optional[str],
    restore: Callable[[keras.Model, str], None],
    enabled: bool = True,
) -> Tuple[keras.Model, WarmStart]:
    """A freshly built network and, when there is a champion and warm start is on, the champion's
    weights restored into it; when they do not fit (another feature config or layer sizes), a
    fresh network again and the record says why."""
    import tensorflow as tf

    model = build_fn()
    if not champion:
        return model, WarmStart(False, None, NO_CHAMPION)
    if not enabled:
        return model, WarmStart(False, champion, SWITCHED_OFF)
    try:
        restore(model, champion)
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        record = WarmStart(False, champion, f"{DIFFERS}: {error}"[:500])
        log.warning("%s", record.reason)
        return build_fn(), record
    log.info("warm start from the champion: %s", champion)
    return model, WarmStart(True, champion, RESTORED)


def write_result(serving_model_dir: str, result: Dict[str, Any]) -> None:
    """training_result.json beside the SavedModel (a local folder or an artifact URI)."""
    storage.write_json(storage.join(serving_model_dir, RESULT_FILE), result, indent=1)


class BestWeights(keras.callbacks.Callback):
    """Validation at every epoch end through `evaluate() -> (metrics, state)`; `metrics[metric]`
    is the figure to minimise. Keeps the best weights of `network` (and the `state` evaluated
    with them, e.g. a fitted back end) and restores them when training ends. Stops after
    `patience` evaluations without a better figure (0 = never), or once `max_seconds` of
    wall-clock time or `max_steps` optimiser steps are spent (0 / None = no such budget): the
    budgets are checked after every batch, so a run never overshoots by an epoch. An epoch the
    budget cut short is evaluated only when it trained at least half an epoch's steps since the
    last evaluation: a step or two barely move the weights, and that evaluation (a full pass over
    the validation split) would be time spent after the budget for a choice it hardly changes.

    With `smoothing` n > 1 the figure that chooses the weights and counts patience is the mean
    of the metric over the last n evaluations (fewer at the start), recorded as
    `<metric>_smoothed` (`best` stays the chosen evaluation's own figure): on a small validation
    set one lucky evaluation would otherwise stand as a best that noise alone keeps later ones
    from beating, and patience would stop the run on it."""

    def __init__(
        self,
        network: keras.Model,
        evaluate: Callable[[], Tuple[Dict[str, float], Any]],
        metric: str,
        patience: int = 0,
        max_seconds: Optional[float] = None,
        max_steps: int = 0,
        log_every_steps: int = 0,
        smoothing: int = 1,
    ) -> None:
        super().__init__()
        if smoothing < 1:
            raise ValueError(f"smoothing={smoothing}: need >= 1 (1 = each evaluation's own figure)")
        self.network, self.evaluate, self.metric = network, evaluate, metric
        self.smoothing = smoothing
        self.patience, self.max_seconds, self.max_steps = patience, max_seconds, max_steps
        self.log_every_steps = log_every_steps
        self.history: List[Dict[str, float]] = []
        self.best, self.best_epoch, self.best_step = float("inf"), -1, 0  # the chosen evaluation's own figure
        self.best_criterion = float("inf")  # what chose it: `best`, or its smoothed mean
        self.best_weights: Optional[list] = None
        self.best_state: Any = None
        self.steps = 0
        self.started = time.time()
        self.eval_seconds = 0.0
        self.budget_reached = False
        self.stopped_early = False
        self.skipped_final_evaluation = False
        self._since_best = 0
        self._evaluated_step = 0
        self._epoch_steps = 0  # the steps of the last whole epoch

    def on_train_begin(self, logs=None) -> None:
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.steps += 1
        elapsed = time.time() - self.started
        if (self.max_seconds and elapsed >= self.max_seconds) or (0 < self.max_steps <= self.steps):
            self.budget_reached = True
            self.model.stop_training = True
        if self.log_every_steps and self.steps % self.log_every_steps == 0:
            log.info("step %d: loss %.4f (%.0f s)", self.steps, float((logs or {}).get("loss", float("nan"))), elapsed)

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs if logs is not None else {}
        since = self.steps - self._evaluated_step
        if self.budget_reached and self.best_weights is not None and since < self._epoch_steps / 2:
            self.skipped_final_evaluation = True
            log.info(
                "budget reached %d step(s) into epoch %d: not evaluated (the best weights stand)", since, epoch + 1
            )
            return
        if not self.budget_reached:
            self._epoch_steps = since
        self._evaluated_step = self.steps
        t0 = time.time()
        metrics, state = self.evaluate()
        self.eval_seconds += time.time() - t0
        logs.update(metrics)  # TensorBoard, after this callback, plots them
        elapsed = time.time() - self.started
        row = {
            "epoch": epoch + 1,
            "step": self.steps,
            "seconds": round(elapsed, 1),
            "loss": float(logs.get("loss", float("nan"))),
            **{k: float(v) for k, v in metrics.items()},
        }
        self.history.append(row)
        log.info(
            "epoch %d: loss %.4f %s (step %d, %.1f min)",
            epoch + 1,
            row["loss"],
            " ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            self.steps,
            elapsed / 60,
        )
        figure = float(metrics[self.metric])
        if self.smoothing > 1:
            recent = [h[self.metric] for h in self.history[-self.smoothing :]]
            figure = row[f"{self.metric}_smoothed"] = sum(recent) / len(recent)
        if figure < self.best_criterion:
            self.best_criterion = figure
            self.best, self.best_epoch, self.best_step = float(metrics[self.metric]), epoch + 1, self.steps
            self.best_weights, self.best_state = self.network.get_weights(), state
            self._since_best = 0
        else:
            self._since_best += 1
            if 0 < self.patience <= self._since_best:
                self.stopped_early = True
                self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        if self.best_weights is not None:
            self.network.set_weights(self.best_weights)

    def summary(self) -> Dict[str, Any]:
        """The figures both result files carry."""
        return {
            "steps": self.steps,
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "budget_reached": self.budget_reached,
            "stopped_early": self.stopped_early,
            "skipped_final_evaluation": self.skipped_final_evaluation,
            "validation_seconds": round(self.eval_seconds, 1),
            "smoothing": self.smoothing,
            "history": self.history,
        }
