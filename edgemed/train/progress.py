"""What a training run measures and shows while it runs.

- :class:`Throughput`: seconds per optimizer step (step time only: evals and checkpoints excluded),
  tokens per second (trained = answer tokens with a loss, real = non-padding, padded = the batch's
  full rectangle) and the process's peak RSS.
- :func:`progress_callback`: the progress bar of train steps and eval batches, with the meter's numbers.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from transformers import TrainerCallback

from edgemed.batching import IGNORE
from edgemed.console import err_console, progress


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class Throughput(TrainerCallback):
    """Counts tokens (fed by :class:`EdgemedTrainer`) and times optimizer steps of this process."""

    def __init__(self):
        self.steps = 0
        self.step_seconds = 0.0
        self.cpu_seconds = 0.0
        self.trained = self.real = self.padded = 0
        self._t0: float | None = None
        self._cpu0 = 0.0

    def count(self, inputs: dict[str, Any]) -> None:
        labels = inputs.get("labels")
        ids = inputs["input_ids"]
        if labels is not None:
            self.trained += int((labels[:, 1:] != IGNORE).sum())
        mask = inputs.get("attention_mask")
        self.real += int(mask.sum()) if mask is not None else ids.numel()
        self.padded += ids.numel()

    def on_step_begin(self, args, state, control, **kw):
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kw):
        if self._t0 is not None:
            self.step_seconds += time.perf_counter() - self._t0
            self.cpu_seconds += time.process_time() - self._cpu0
            self.steps += 1
            self._t0 = None

    def summary(self, world_size: int = 1, totals: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """The numbers of this process's steps; `totals` (trained, real, padded) summed over processes."""
        trained, real, padded = totals or (self.trained, self.real, self.padded)
        secs = self.step_seconds

        def rate(n: int) -> float | None:
            return round(n / secs, 2) if secs > 0 else None

        return {
            "steps": self.steps,
            "step_seconds": round(secs, 3),
            "seconds_per_step": round(secs / self.steps, 4) if self.steps else None,
            # CPU seconds of this process (all its threads) per step: with one thread, what a step costs
            # regardless of other work on the machine; with several it also counts threads spinning at barriers
            "cpu_seconds_per_step": round(self.cpu_seconds / self.steps, 4) if self.steps else None,
            "trained_tokens": trained,
            "real_tokens": real,
            "padded_tokens": padded,
            "trained_tokens_per_second": rate(trained),
            "real_tokens_per_second": rate(real),
            "padded_tokens_per_second": rate(padded),
            "padding_share": round(1 - real / padded, 4) if padded else None,
            "peak_rss_mb": _round(peak_rss_mb()),
            "world_size": world_size,
        }

    def line(self) -> str:
        """The progress-line suffix: tokens/s (trained and padded), s/step, peak RSS."""
        if not self.steps or self.step_seconds <= 0:
            return ""
        s = self.step_seconds
        rss = peak_rss_mb()
        mem = f" · peak RSS {rss:,.0f} MiB" if rss is not None else ""
        return (f" · {self.trained / s:,.0f} trained / {self.padded / s:,.0f} padded tok/s · "
                f"{s / self.steps:.2f} s/step{mem}")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def progress_callback(meter=None):
    """A TrainerCallback that drives edgemed.console.progress (train steps, and eval batches); with `meter`
    (a :class:`Throughput`, registered before this callback) the train line and the eval lines
    also show trained/padded tokens per second, seconds per step and peak RSS."""
    class RichProgress(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.task = None
            self.eval_task = None
            self.loss = None

        def _start(self, state):
            if self.bar is None and state.is_world_process_zero:
                self.bar = progress()
                self.bar.start()

        def on_train_begin(self, args, state, control, **kw):
            self._start(state)
            if self.bar is not None:
                self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None and self.task is not None:
                loss = f" loss {self.loss:.3f}" if self.loss is not None else ""
                speed = meter.line() if meter is not None else ""
                self.bar.update(self.task, completed=state.global_step, description=f"train{loss}{speed}")

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kw):
            self._start(state)
            if self.bar is None:
                return
            if self.eval_task is None:
                total = len(eval_dataloader) if eval_dataloader is not None else None
                self.eval_task = self.bar.add_task("eval", total=total)
            self.bar.advance(self.eval_task)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if state.is_world_process_zero and metrics and "eval_loss" in metrics:
                loss = f", train loss {self.loss:.4f}" if self.loss is not None else ""
                where = f"step {state.global_step}/{state.max_steps}" if state.max_steps else "before training"
                speed = meter.line() if meter is not None and self.task is not None else ""
                err_console.print(f"{where}: eval loss {metrics['eval_loss']:.4f}{loss}{speed}")
            if self.bar is not None and self.eval_task is not None:
                self.bar.remove_task(self.eval_task)
                self.eval_task = None
            if self.bar is not None and self.task is None:  # eval outside training: close the bar
                self.close()

        def on_train_end(self, args, state, control, **kw):
            self.close()

        def close(self):
            if self.bar is not None:
                self.bar.stop()
            self.bar = self.task = self.eval_task = None

    return RichProgress()
