"""MedMCQA-schema rows validated one by one and turned into Questions (rows come from
:mod:`edgemed.data.sources`: the bundled sample, local files or a hub dataset).

Label convention: the Hugging Face copy numbers ``cop`` 0..3, the original release 1..4, and the
test split has no label (-1). ``cop_base`` is ``"auto"``, ``0`` or ``1``; labels are never shifted
silently: an ambiguous or contradicting file is refused with a message naming the fix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from edgemed.data.sources import read_rows
from edgemed.errors import EdgemedError

LETTERS = ("A", "B", "C", "D")
OPTION_KEYS = ("opa", "opb", "opc", "opd")
# With 0-based labels, P(no cop == 0 among n uniform labels) = 0.75**n; below this we call it 1-based.
_MIN_ROWS_FOR_INFERENCE = 20


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    options: tuple[str, str, str, str]
    answer: int  # 0..3, or -1 when unlabelled
    subject: str = ""
    exp: str = ""

    @property
    def gold_letter(self) -> str:
        return LETTERS[self.answer] if self.answer >= 0 else "?"

    def to_row(self) -> dict[str, Any]:
        row = {"id": self.id, "question": self.question, "cop": self.answer}
        row.update(dict(zip(OPTION_KEYS, self.options, strict=True)))
        if self.subject:
            row["subject_name"] = self.subject
        if self.exp:
            row["exp"] = self.exp
        return row


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based row number in the source
    id: str
    problem: str

    def __str__(self) -> str:
        ident = f" (id {self.id})" if self.id else ""
        return f"row {self.row}{ident}: {self.problem}"


def _text(row: dict[str, Any], key: str) -> tuple[str | None, str | None]:
    """(value, problem) for a required text field."""
    if key not in row or row[key] is None:
        return None, f"missing '{key}'"
    value = row[key]
    if not isinstance(value, str):
        return None, f"'{key}' is {type(value).__name__}, expected text"
    if not value.strip():
        return None, f"empty '{key}'"
    return value, None


def _cop(row: dict[str, Any]) -> tuple[int | None, str | None]:
    value = row.get("cop")
    if value is None or value == "":
        return None, "missing 'cop'"
    if isinstance(value, bool):
        return None, f"'cop' is {value!r}, expected an integer"
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None, f"'cop' is {row['cop']!r}, expected an integer"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        return None, f"'cop' is {type(value).__name__}, expected an integer"
    return value, None


def infer_cop_base(cops: list[int]) -> int | None:
    """0 or 1 when the labels tell, None when they cannot."""
    labelled = [c for c in cops if c >= 0]
    if not labelled:
        return None
    if 4 in labelled and 0 not in labelled:
        return 1
    if 0 in labelled and 4 not in labelled:
        return 0
    if 0 not in labelled and 4 not in labelled and len(labelled) >= _MIN_ROWS_FOR_INFERENCE:
        return 1  # 0.75**20 < 0.4%: uniform 0-based labels would have shown a 0
    return None


def validate_rows(
    rows: list[dict[str, Any]], cop_base: str | int = "auto", require_labels: bool = True
) -> tuple[list[Question], list[RowProblem], int]:
    """Check every row. Returns (questions, problems, cop_base used)."""
    problems: list[RowProblem] = []
    raw_cops = [c for r in rows if isinstance(r, dict) for c in [_cop(r)[0]] if c is not None]
    base = _resolve_cop_base(raw_cops, cop_base)
    seen: dict[str, int] = {}
    questions: list[Question] = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            problems.append(RowProblem(n, "", f"row is {type(row).__name__}, expected an object"))
            continue
        ident = row.get("id")
        row_problems = []
        if ident is not None and (isinstance(ident, bool) or not isinstance(ident, str | int)):
            row_problems.append(f"'id' is {type(ident).__name__}, expected text or an integer")
            ident = None
        ident = str(ident) if ident not in (None, "") else f"row-{n}"
        qtext, p = _text(row, "question")
        if p:
            row_problems.append(p)
        options = []
        for key in OPTION_KEYS:
            value, p = _text(row, key)
            if p:
                row_problems.append(p)
            options.append(value)
        cop, p = _cop(row)
        if p:
            row_problems.append(p)
        elif cop == -1:
            if require_labels:
                row_problems.append("unlabelled (cop -1, as in the test split); use a labelled split")
        elif not base <= cop <= base + 3:
            row_problems.append(f"cop {cop} out of range {base}..{base + 3} for {base}-based labels")
        for key in ("subject_name", "exp"):
            if row.get(key) is not None and not isinstance(row[key], str):
                row_problems.append(f"'{key}' is {type(row[key]).__name__}, expected text")
        if ident in seen:
            row_problems.append(f"duplicate id (first seen in row {seen[ident]})")
        else:
            seen[ident] = n
        if row_problems:
            problems.extend(RowProblem(n, ident, p) for p in row_problems)
            continue
        answer = -1 if cop == -1 else cop - base
        questions.append(
            Question(
                id=ident,
                question=qtext.strip(),
                options=tuple(o.strip() for o in options),
                answer=answer,
                subject=(row.get("subject_name") or "").strip(),
                exp=(row.get("exp") or "").strip(),
            )
        )
    return questions, problems, base


def _resolve_cop_base(cops: list[int], cop_base: str | int) -> int:
    inferred = infer_cop_base(cops)
    if str(cop_base) == "auto":
        if inferred is None:
            if not [c for c in cops if c >= 0]:
                return 0
            raise EdgemedError(
                "cannot tell whether 'cop' is 0-based (Hugging Face copy, 0..3) or 1-based "
                "(original release, 1..4) from these rows; pass --cop-base 0 or --cop-base 1"
            )
        return inferred
    base = int(cop_base)
    if base not in (0, 1):
        raise EdgemedError(f"--cop-base must be auto, 0 or 1, not {cop_base}")
    if inferred is not None and inferred != base:
        hint = "contains cop 4 and no 0" if inferred == 1 else "contains cop 0"
        if inferred == 1 and 4 not in cops:
            hint = f"has no cop 0 in {len([c for c in cops if c >= 0])} labelled rows"
        raise EdgemedError(
            f"labels declared {base}-based but the data {hint}, so it looks {inferred}-based; "
            f"check the source and pass --cop-base {inferred} if that is right"
        )
    return base


def load_questions(
    source: str,
    split: str = "train",
    cop_base: str | int = "auto",
    skip_bad: bool = False,
    limit: int | None = None,
) -> tuple[list[Question], list[RowProblem]]:
    """Validated questions. Bad rows raise EdgemedError unless skip_bad (then they are returned)."""
    rows = read_rows(source, split)
    if not rows:
        raise EdgemedError(f"data source '{source}' (split {split}) has no rows")
    questions, problems, _ = validate_rows(rows, cop_base)
    if problems and not skip_bad:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise EdgemedError(
            f"{source}: {first}{more}; run 'edgemed data check {source}' for the full list, "
            "fix the rows, or pass --skip-bad-rows to skip them"
        )
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        raise EdgemedError(f"data source '{source}' has no usable rows")
    return questions, problems


def data_summary(questions: list[Question]) -> dict[str, Any]:
    return {
        "rows": len(questions),
        "subjects": dict(Counter(q.subject or "(none)" for q in questions).most_common()),
        "answers": {LETTERS[i]: sum(q.answer == i for q in questions) for i in range(4)},
    }

