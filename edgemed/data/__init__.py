"""MedMCQA data: loading from the hub, local files or the bundled sample; validation; splits."""

from edgemed.data.medmcqa import LETTERS, Question, RowProblem, load_questions, validate_rows
from edgemed.data.sources import read_rows
from edgemed.data.split import EVAL_FRACTION, split_questions

__all__ = [
    "EVAL_FRACTION",
    "LETTERS",
    "Question",
    "RowProblem",
    "load_questions",
    "read_rows",
    "split_questions",
    "validate_rows",
]
