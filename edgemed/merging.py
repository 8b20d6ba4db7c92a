"""Merge a LoRA adapter into its base model and prove the merge: merged vs adapter logits on real prompts.

The merged folder (safetensors + tokenizer + ``edgemed-merge.json``) appears only after the check passed;
on any failure nothing is left under the final name.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from edgemed.batching import AnswerOnlyCollator, encode_question
from edgemed.errors import CheckFailed, EdgemedError
from edgemed.fsutil import atomic_dir, check_output_dir, read_json, remove_stale_partials
from edgemed.lineage import Lineage
from edgemed.merge_config import MergeConfig
from edgemed.registry import require_train
from edgemed.train.rundir import ADAPTER, RUN_CONFIG, model_signature, read_run

MERGE_RECORD = "edgemed-merge.json"
ADAPTER_FILES = ("adapter_model.safetensors",)


def find_adapter(path: Path) -> tuple[Path, Path | None, dict[str, Any] | None]:
    """(adapter folder, run folder or None, run record or None) for a run folder or an adapter folder."""
    path = Path(path)
    if not path.exists():
        raise EdgemedError(f"adapter {path} does not exist; give the --out folder of 'edgemed train'")
    if not path.is_dir():
        raise EdgemedError(f"adapter {path} is not a folder; give the --out folder of 'edgemed train'")
    if (path / ADAPTER).is_dir():
        adapter, run_dir = path / ADAPTER, path
    else:
        adapter = path
        run_dir = path.parent if (path.parent / RUN_CONFIG).exists() else None
    if not (adapter / "adapter_config.json").exists():
        raise EdgemedError(
            f"{path} holds no LoRA adapter (no adapter_config.json{' in adapter/' if adapter != path else ''}); "
            "give the --out folder of a finished 'edgemed train' run"
        )
    if not any((adapter / name).exists() for name in ADAPTER_FILES):
        raise EdgemedError(
            f"{adapter} has adapter_config.json but no adapter_model.safetensors; the run did not finish: "
            "re-run 'edgemed train' with --resume"
        )
    read_json(adapter / "adapter_config.json", "LoRA adapter config", "re-run 'edgemed train' with --force",
              want_object=True)
    record = read_run(run_dir) if run_dir is not None else None
    return adapter, run_dir, record


def _base_name(base: str | None, adapter: Path, record: dict[str, Any] | None) -> tuple[str, str]:
    """(base as given, resolved path or hub id)."""
    from edgemed.models import resolve_model

    if base is not None:
        return base, resolve_model(base)
    if record is not None:
        given = record["base_model"]["given"]
        resolved = record["base_model"]["resolved"]
        return given, resolved if Path(resolved).is_dir() else resolve_model(given)
    cfg = read_json(adapter / "adapter_config.json", "LoRA adapter config", "re-run 'edgemed train' with --force",
                    want_object=True)
    name = cfg.get("base_model_name_or_path")
    if not name:
        raise EdgemedError(f"{adapter} does not record its base model; pass --base MODEL")
    return name, resolve_model(name)


def _check_signature(record: dict[str, Any] | None, base: str) -> None:
    wanted = (record or {}).get("base_model", {}).get("signature")
    if not wanted:
        return
    found = model_signature(base)
    diffs = [f"{k} {found.get(k)} (adapter: {v})" for k, v in wanted.items() if found.get(k) != v]
    if diffs:
        raise EdgemedError(
            f"--base {base} is not the model this adapter was trained on ({record['base_model']['given']}): "
            f"{', '.join(diffs)}; pass the base it was trained on"
        )


def verification_questions(lineage: Lineage | None, n: int) -> list:
    """A few real questions: the run's held-out eval questions, else the bundled sample."""
    from edgemed.data import load_questions

    if lineage is not None and lineage.trained and lineage.eval_ids:
        ev, wanted = lineage.evaluation or {}, set(lineage.eval_ids[: n * 4])
        try:
            questions, _ = load_questions(ev["source"], ev.get("split") or "validation",
                                          cop_base=(lineage.data or {}).get("cop_base", "auto"), skip_bad=True)
            chosen = [q for q in questions if q.id in wanted][:n]
            if chosen:
                return chosen
        except EdgemedError:
            pass  # the eval data moved: fall back to the sample
    questions, _ = load_questions("sample", limit=n)
    return questions


def _logits(model, batch) -> Any:
    import torch

    dev = model.get_input_embeddings().weight.device
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev))
    return out.logits.float().cpu()


def run_merge(config: MergeConfig) -> dict[str, Any]:
    """``edgemed merge``: check this install and --out before any work, remove what a killed earlier merge left
    beside it, then merge and verify (:func:`merge_adapter`); returns the record it wrote (edgemed-merge.json)."""
    require_train("edgemed merge")
    check_output_dir(Path(config.out), "--out")
    remove_stale_partials(Path(config.out))
    return merge_adapter(config.adapter, config.out, base=config.base, tolerance=config.max_logit_diff,
                         force=config.force, device=config.device, prompts=config.prompts,
                         trust_remote_code=config.trust_remote_code)


def merge_adapter(
    adapter: Path,
    out: Path,
    base: str | None = None,
    tolerance: float = 1e-3,
    force: bool = False,
    device: str = "cpu",
    prompts: int = 4,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Merge the adapter of a run (or an adapter folder) into its base, save to `out`, verify; returns the record.

    Raises EdgemedError (exit 2) for bad inputs and CheckFailed (exit 1) when merged and adapter logits
    differ by more than `tolerance` on the attention-masked positions; then `out` is not written.
    """
    from edgemed.console import err_console
    from edgemed.manifest import versions
    from edgemed.models import load_tokenizer, pick_device
    from edgemed.prompts import get_style

    if not tolerance >= 0:
        raise EdgemedError(f"--max-logit-diff must be 0 or more, not {tolerance}")
    if prompts < 1:
        raise EdgemedError(f"--prompts must be at least 1, not {prompts}")
    out = Path(out)
    adapter_dir, run_dir, record = find_adapter(Path(adapter))
    if out.exists() and not force:
        raise EdgemedError(f"{out} already exists; pass --force to replace it or choose another --out")
    if out.resolve() in (Path(adapter).resolve(), adapter_dir.resolve()):
        raise EdgemedError("--out must differ from --adapter; choose another folder for the merged model")
    given, resolved = _base_name(base, adapter_dir, record)
    _check_signature(record, resolved)
    choice = pick_device(device, "float32")  # merge and verify in float32
    from edgemed.memory_plan import merge_need, model_shape

    shape = model_shape(resolved) if choice.device == "cpu" else None
    if shape is not None:
        merge_need(shape).check()  # exit 2 with the estimate before the weights load
    started = time.time()
    tokenizer = load_tokenizer(str(adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else resolved),
                               trust_remote_code=trust_remote_code)
    lineage = _lineage(run_dir, tokenizer, given, resolved)
    err_console.print(f"edgemed merge: {adapter_dir} into {given} on {choice}")
    record_out: dict[str, Any] = {
        "schema": 1,
        "kind": "edgemed-merge",
        "base_model": {"given": given, "resolved": resolved},
        "adapter": str(adapter_dir.resolve()),
        "run": str(run_dir.resolve()) if run_dir else None,
        "lineage": lineage.to_dict(),
        "dtype": choice.dtype,
        "versions": versions(),
    }
    questions = verification_questions(lineage, prompts)
    batch = _batch(tokenizer, get_style(lineage.prompt_style), questions)
    # the adapted model is handed over unnamed: _merge_and_save holds its only reference and frees it
    _merge_and_save(_load_adapted(resolved, adapter_dir, given, choice, trust_remote_code), tokenizer, batch,
                    out, force, choice, tolerance, record_out, [q.id for q in questions], started)
    if record_out["verification"]["adapter_effect_max_abs"] == 0.0:
        err_console.print("[yellow]the adapter does not change the base model's logits (untrained adapter?)")
    return record_out


def _lineage(run_dir: Path | None, tokenizer: Any, given: str, resolved: str) -> Lineage:
    """The run's lineage; for a bare adapter this stage decides the style, and the training data is unknown."""
    from edgemed.lineage import read_lineage, untrained
    from edgemed.prompts import detect_style_for_tokenizer

    lineage = read_lineage(run_dir) if run_dir is not None else None
    if lineage is None:
        lineage = untrained(detect_style_for_tokenizer(tokenizer, given),
                            "chat template at merge (adapter without a train run record)",
                            {"given": given, "resolved": resolved})
    return lineage


def _load_adapted(resolved: str, adapter_dir: Path, given: str, choice: Any, trust_remote_code: bool) -> Any:
    """The base model with the adapter applied (eval mode); exit 2 when the adapter is corrupt or does not fit."""
    from peft import PeftModel

    from edgemed.models import load_model

    base_model = load_model(resolved, choice, trust_remote_code=trust_remote_code)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = PeftModel.from_pretrained(base_model, str(adapter_dir))
        except Exception as exc:
            from edgemed.models import is_corrupt_weights

            if is_corrupt_weights(exc):
                raise EdgemedError(f"adapter {adapter_dir}: adapter_model.safetensors is corrupt ({exc}); "
                                   "re-run 'edgemed train' with --force") from None
            if not isinstance(exc, RuntimeError | ValueError | KeyError | OSError):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EdgemedError(
                f"adapter {adapter_dir} does not fit base {given}: {first[:300]}; pass the --base it was trained on"
            ) from None
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise EdgemedError(f"adapter {adapter_dir} does not fit base {given} (missing adapter weights); "
                           "pass the --base it was trained on")
    model.eval()
    return model


def _batch(tokenizer: Any, style: Any, questions: list) -> dict[str, Any]:
    tokenizer.padding_side = "right"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return AnswerOnlyCollator(pad)([encode_question(tokenizer, style, q) for q in questions])


def _merge_and_save(model: Any, tokenizer: Any, batch: dict[str, Any], out: Path, force: bool, choice: Any,
                    tolerance: float, record_out: dict[str, Any], question_ids: list[str], started: float) -> None:
    """Merge, save, reload from disk and compare with the adapted logits; `out` appears only when they agree.
    Fills record_out's verification and seconds."""
    from edgemed.models import load_model

    mask = batch["attention_mask"].bool()
    adapted = _logits(model, batch)
    with model.disable_adapter():
        plain = _logits(model, batch)
    merged = model.merge_and_unload()
    del model
    effect = (adapted - plain).abs()[mask].max().item()
    with atomic_dir(out, force=force) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del merged
        reloaded = load_model(str(tmp), choice)
        diff = (_logits(reloaded, batch) - adapted).abs()[mask]
        del reloaded
        max_diff = diff.max().item()
        passed = bool(max_diff <= tolerance)
        record_out["verification"] = {
            "passed": passed,
            "max_abs_logit_diff": max_diff,
            "mean_abs_logit_diff": diff.mean().item(),
            "tolerance": tolerance,
            "compared": "merged model reloaded from disk vs base+adapter, logits on attention-masked positions",
            "questions": question_ids,
            "positions": int(mask.sum().item()),
            "adapter_effect_max_abs": effect,
        }
        record_out["seconds"] = time.time() - started
        if not passed:
            raise CheckFailed(
                f"merge verification failed: merged and adapter logits differ by up to {max_diff:.3g} "
                f"(tolerance {tolerance:g}); nothing was written to {out}. Check the adapter/base pair, or raise "
                "--max-logit-diff if this precision is expected"
            )
        (tmp / MERGE_RECORD).write_text(json.dumps(record_out, indent=2) + "\n")
