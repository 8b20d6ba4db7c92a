"""Lineage: the facts one stage decides and every later stage reads (never re-derives).

``edgemed train`` writes ``lineage.json`` in its run folder: the base model, the prompt style, the data
source with a hash of its questions, the split (seed, fraction or a separate evaluation source) and the ids
on each side. ``edgemed merge`` copies it into ``edgemed-merge.json`` and ``edgemed export`` into every
artifact's ``edgemed.json`` (key ``lineage``). A model that edgemed never trained gets its lineage at the
first stage that sees it (merge of a bare adapter, export of a plain model folder): the prompt style that
stage read from the chat template, and no training ids.

:func:`read_lineage` is the one reader; :func:`prompt_style_for` and :func:`scoring_questions` answer the
questions eval, bench and pipeline ask of it (which prompt style; which questions may be scored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError

LINEAGE_FILE = "lineage.json"  # in a train run folder
SCHEMA = 1


@dataclass
class Lineage:
    """Where a model came from. ``train_ids``/``eval_ids`` are None when edgemed did not train it."""

    prompt_style: str
    style_source: str  # who decided the style: "train --prompt-style", "chat template at train", ...
    base_model: dict[str, Any] = field(default_factory=dict)  # {"given", "resolved"}
    data: dict[str, Any] | None = None  # {"source", "split", "cop_base", "limit", "questions", "sha256"}
    evaluation: dict[str, Any] | None = None  # {"mode", "source", "split", "seed", "fraction", "sha256"}
    train_ids: list[str] | None = None
    eval_ids: list[str] | None = None
    run: str | None = None
    schema: int = SCHEMA
    # A style derived from the model's chat template: its strings and how they were derived (None otherwise)
    prompt_template: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.prompt_template is None:
            from edgemed.prompts import STYLES, get_style

            if self.prompt_style not in STYLES:
                self.prompt_template = get_style(self.prompt_style).record()

    @property
    def trained(self) -> bool:
        return self.train_ids is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> Lineage:
        from edgemed.prompts import STYLES, is_known_style, register_record

        if not isinstance(data, dict) or not isinstance(data.get("prompt_style"), str):
            raise EdgemedError(f"{where} holds no valid lineage record; re-run the stage that wrote it with --force")
        if data.get("schema", SCHEMA) > SCHEMA:
            raise EdgemedError(f"{where}: lineage schema {data['schema']} is newer than this edgemed ({SCHEMA}); "
                               "upgrade edgemed")
        if data.get("prompt_template") is not None:
            style = register_record(data["prompt_template"], where)
            if style.name != data["prompt_style"]:
                raise EdgemedError(f"{where} records prompt style '{data['prompt_style']}' but the template strings "
                                   f"of '{style.name}'; re-run the stage that wrote it with --force")
        if not is_known_style(data["prompt_style"]):
            raise EdgemedError(f"{where} records prompt style '{data['prompt_style']}', which this edgemed does not "
                               f"know ({', '.join(STYLES)}); pass --prompt-style explicitly")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe_eval_side(self) -> str:
        ev = self.evaluation or {}
        if ev.get("mode") == "separate":
            return f"the separate evaluation source {ev.get('source')} ({ev.get('split')})"
        return (f"the held-out side (seed {ev.get('seed')}, fraction {ev.get('fraction')}) of {ev.get('source')}")


def questions_sha256(questions: Sequence) -> str:
    """A hash of what a question set says (ids, text, options, answers), independent of the file format."""
    h = hashlib.sha256()
    for q in questions:
        h.update("\x1f".join([q.id, q.question, *q.options, str(q.answer)]).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def source_name(source: str) -> str:
    """A data source as recorded: local paths absolute (so later stages find them from any folder)."""
    path = Path(source).expanduser()
    return str(path.resolve()) if source != "sample" and path.exists() else source


def _same_source(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and source_name(a) == source_name(b)


# --- where lineage lives ------------------------------------------------------------------------------------
def _record_file(path: Path) -> tuple[Path, str | None] | None:
    """(file, key) holding the lineage of a run folder, adapter folder, merged folder, artifact or .gguf file."""
    from edgemed.manifest import MANIFEST

    folder = path if path.is_dir() else path.parent
    candidates = [
        (folder / MANIFEST, "lineage"),  # an exported artifact (a .gguf file's folder too)
        (folder / "edgemed-merge.json", "lineage"),  # a merged model
        (folder / LINEAGE_FILE, None),  # a train run folder
    ]
    if folder.name == "adapter":
        candidates.append((folder.parent / LINEAGE_FILE, None))  # a run folder's adapter/
    return next(((file, key) for file, key in candidates if file.is_file()), None)


def read_lineage(path: Path | str) -> Lineage | None:
    """The lineage recorded for a model, or None when no edgemed stage saw it (a plain folder, a bare .gguf).

    A corrupt record or an unknown prompt style raises EdgemedError (exit 2): a record that cannot be read is
    never silently replaced by a guess.
    """
    path = Path(path)
    if not path.exists():
        return None
    found = _record_file(path)
    if found is None:
        return None
    file, key = found
    from edgemed.fsutil import read_json

    doc = read_json(file, "lineage record", "re-run the stage that wrote it with --force")
    if key is None:
        return Lineage.from_dict(doc, file)
    if not isinstance(doc, dict):
        raise EdgemedError(f"{file} is corrupt (not a JSON object); re-run the stage that wrote it with --force")
    if key in doc:
        return Lineage.from_dict(doc[key], file)
    if isinstance(doc.get("prompt_style"), str):  # written before lineage existed: the style alone is recorded
        return Lineage.from_dict({"prompt_style": doc["prompt_style"], "style_source": f"{file.name} (no lineage)"},
                                 file)
    return None


def write_lineage(folder: Path, lineage: Lineage) -> Path:
    from edgemed.fsutil import atomic_write_json

    return atomic_write_json(Path(folder) / LINEAGE_FILE, lineage.to_dict())


def untrained(prompt_style: str, style_source: str, base: dict[str, Any] | None = None) -> Lineage:
    """Lineage of a model edgemed did not train: its style as decided now, no training data."""
    return Lineage(prompt_style=prompt_style, style_source=style_source, base_model=base or {})


# --- what later stages ask ----------------------------------------------------------------------------------
def prompt_style_for(path: Path | str | None, chat_template: Callable[[], str | None]) -> tuple[str, str]:
    """(prompt style, where it came from): the recorded one, else the one the model's chat template implies
    (only for models no edgemed stage has seen, which have no record to read)."""
    lineage = read_lineage(path) if path is not None else None
    if lineage is not None:
        return lineage.prompt_style, lineage.style_source
    from edgemed.prompts import detect_style

    runtime = getattr(chat_template, "__self__", None)  # a runtime's bound method: its tokens render the template
    tokens = runtime.template_tokens() if hasattr(runtime, "template_tokens") else {}
    return (detect_style(chat_template(), **tokens, model=str(path) if path is not None else "the model"),
            "chat template (no lineage recorded)")


def _eval_side(lineages: list[Lineage]) -> tuple[str, str, set[str], Lineage]:
    """(source, split, ids) every trained model held out: the intersection of their evaluation sides."""
    first = lineages[0]
    ev = first.evaluation or {}
    ids = set(first.eval_ids or [])
    for other in lineages[1:]:
        o = other.evaluation or {}
        if not (_same_source(o.get("source"), ev.get("source")) and o.get("split") == ev.get("split")):
            raise EdgemedError(
                f"the artifacts were evaluated on different sources when trained ({ev.get('source')} vs "
                f"{o.get('source')}); pass --data to choose the questions"
            )
        ids &= set(other.eval_ids or [])
    return ev["source"], ev.get("split") or "validation", ids, first


def scoring_questions(
    data: str | None,
    split: str | None,
    lineages: dict[str, Lineage | None],
    *,
    include_trained: bool = False,
    cop_base: str = "auto",
    skip_bad_rows: bool = False,
    limit: int | None = None,
) -> tuple[list, dict[str, Any]]:
    """The questions eval/bench score, and where they came from.

    Default (no --data): the recorded evaluation side of the models' training data (for several trained
    models, the questions none of them trained on); the whole bundled sample for models edgemed never trained.
    ``--data`` naming the recorded evaluation source (by name or by content) selects the same side, unless
    ``include_trained`` asks for the whole source. Any question a model trained on is refused (EdgemedError
    naming how many and the flag) unless ``include_trained``.
    """
    from edgemed.data import load_questions

    if split is not None and (data is None or data == "sample" or Path(data).expanduser().is_file()):
        raise EdgemedError(f"--split picks a split of a data folder or hub dataset; {data or 'the default data'} "
                           "has none: drop --split (or give --data FOLDER_OR_HUB_ID)")
    trained = [lin for lin in lineages.values() if lin is not None and lin.trained]
    info: dict[str, Any] = {}
    side = _eval_side(trained) if trained else None
    if data is None:
        data, split = (side[0], side[1]) if side else ("sample", split)
    split = split or "validation"
    questions, problems = load_questions(data, split, cop_base=cop_base, skip_bad=skip_bad_rows)
    info.update(source=data, split=split, rows_skipped=len({p.row for p in problems}))
    if side is not None:
        source, eval_split, keep, first = side
        recorded_sha = (first.evaluation or {}).get("sha256")
        same = (_same_source(data, source) and split == eval_split) or recorded_sha == questions_sha256(questions)
        if same and not include_trained:
            questions = [q for q in questions if q.id in keep]
            info["selection"] = f"recorded evaluation side: {first.describe_eval_side()}"
    elif info["source"] == "sample" and not any(lineages.values()):
        info["selection"] = "the whole bundled sample (no model edgemed trained: nothing to hold out)"
    legacy = [name for name, lin in lineages.items() if lin is not None and lin.style_source.endswith("(no lineage)")]
    if legacy:  # exported before lineage was recorded: which questions it trained on is unknown
        from edgemed.console import err_console

        info["unknown_training_data"] = legacy
        err_console.print(f"[yellow]{', '.join(legacy)}: exported without a lineage record, so the questions it was "
                          "trained on are unknown and cannot be excluded; re-export it from its merged model[/yellow]")
    overlap = {}
    for name, lin in lineages.items():
        if lin is not None and lin.trained:
            seen = set(lin.train_ids or [])
            overlap[name] = sum(q.id in seen for q in questions)
    overlap = {k: v for k, v in overlap.items() if v}
    if overlap and not include_trained:
        worst = max(overlap, key=overlap.get)
        raise EdgemedError(
            f"{overlap[worst]} of the {len(questions)} questions to score were used to train {worst}"
            f"{f' (and {len(overlap) - 1} more artifact(s))' if len(overlap) > 1 else ''}; drop --data to score "
            "the recorded evaluation side, or pass --include-trained to score them on purpose"
        )
    if overlap:
        info["trained_questions_included"] = overlap
    if limit is not None:
        questions = questions[:limit]
        info["limit"] = limit
    if not questions:
        raise EdgemedError(f"no questions left to score from '{data}' ({split}); check --data, --split and --limit")
    info["questions"] = len(questions)
    return questions, info
