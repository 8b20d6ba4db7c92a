"""Data layer: every source kind, row validation, the cop convention, the stable split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from edgemed.data import load_questions, read_rows, split_questions, validate_rows
from edgemed.data.medmcqa import infer_cop_base
from edgemed.errors import EdgemedError


def _row(i: int, cop: int = 0, **kw) -> dict:
    row = {"id": f"q{i}", "question": f"Question {i}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": cop}
    row.update(kw)
    return row


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sample_is_valid_and_varied():
    qs, problems = load_questions("sample")
    assert not problems
    assert len(qs) >= 200
    assert len({q.subject for q in qs}) >= 10
    assert {q.answer for q in qs} == {0, 1, 2, 3}
    assert all(q.exp for q in qs)


def test_real_medmcqa_loads(medmcqa):
    qs, _ = load_questions(str(medmcqa / "validation.jsonl"))
    assert len(qs) == 500
    assert all(0 <= q.answer <= 3 for q in qs)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (_row(1, opb=""), "empty 'opb'"),
        (_row(1, opc=None), "missing 'opc'"),
        (_row(1, opd=7), "'opd' is int, expected text"),
        (_row(1, cop=9), "cop 9 out of range"),
        (_row(1, cop="x"), "expected an integer"),
        (_row(1, subject_name=3), "'subject_name' is int"),
    ],
)
def test_bad_rows_are_named(row, problem):
    rows = [_row(i, cop=i % 4) for i in range(2, 30)] + [row]
    _, problems, _ = validate_rows(rows, cop_base=0)
    assert len(problems) == 1
    assert problems[0].row == len(rows)
    assert problem in problems[0].problem


def test_an_id_that_is_not_text_or_a_number_is_a_bad_row():
    _, problems, _ = validate_rows([_row(1, id=["x"]), _row(2, id={"a": 1}), _row(3, id=True), _row(4, id=7)], 0)
    assert [p.row for p in problems] == [1, 2, 3] and all("'id' is" in p.problem for p in problems)


def test_duplicate_ids_are_reported():
    rows = [_row(i, cop=i % 4) for i in range(8)] + [_row(3, cop=1)]
    _, problems, _ = validate_rows(rows, cop_base=0)
    assert [p.problem for p in problems] == ["duplicate id (first seen in row 4)"]


def test_unlabelled_rows_refused_for_scoring():
    _, problems, _ = validate_rows([_row(1, cop=-1), _row(2, cop=0)], cop_base=0)
    assert "unlabelled" in problems[0].problem


def test_cop_base_inference():
    assert infer_cop_base([0, 1, 2, 3]) == 0
    assert infer_cop_base([1, 2, 3, 4]) == 1
    assert infer_cop_base([1, 2, 3] * 10) == 1  # 30 labels and never a 0: 1-based
    assert infer_cop_base([1, 2, 3]) is None  # too few to tell


def test_one_based_data_declared_zero_based_is_refused(tmp_path):
    one_based = _write_jsonl(tmp_path / "orig.jsonl", [_row(i, cop=1 + i % 4) for i in range(40)])
    with pytest.raises(EdgemedError, match="looks 1-based"):
        load_questions(str(one_based), cop_base=0)
    qs, _ = load_questions(str(one_based), cop_base="auto")
    assert [q.answer for q in qs[:4]] == [0, 1, 2, 3]  # shifted once, explicitly


def test_zero_based_data_declared_one_based_is_refused(tmp_path):
    zero_based = _write_jsonl(tmp_path / "hf.jsonl", [_row(i, cop=i % 4) for i in range(40)])
    with pytest.raises(EdgemedError, match="looks 0-based"):
        load_questions(str(zero_based), cop_base=1)


def test_ambiguous_labels_need_a_declaration(tmp_path):
    few = _write_jsonl(tmp_path / "few.jsonl", [_row(i, cop=1 + i % 3) for i in range(5)])
    with pytest.raises(EdgemedError, match="--cop-base"):
        load_questions(str(few))
    assert len(load_questions(str(few), cop_base=1)[0]) == 5


def test_csv_json_and_parquet_sources(tmp_path):
    rows = [_row(i, cop=i % 4) for i in range(8)]
    with open(tmp_path / "d.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.csv", "d.json", "d.parquet"):
        qs, _ = load_questions(str(tmp_path / name), cop_base="auto")
        assert [q.answer for q in qs] == [i % 4 for i in range(8)], name


def test_malformed_jsonl_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_row(1)) + "\n{not json\n")
    with pytest.raises(EdgemedError, match="line 2 is not valid JSON"):
        read_rows(str(bad))


def test_skip_bad_rows_counts_them(tmp_path):
    rows = [_row(i, cop=i % 4) for i in range(12)] + [_row(99, opa="")]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(EdgemedError, match="--skip-bad-rows"):
        load_questions(str(path))
    qs, problems = load_questions(str(path), skip_bad=True)
    assert len(qs) == 12 and len(problems) == 1


def test_split_is_stable_and_disjoint():
    qs, _ = load_questions("sample")
    train, ev = split_questions(qs, 0.2, seed=0)
    assert not {q.id for q in train} & {q.id for q in ev}
    assert len(train) + len(ev) == len(qs)
    assert 0.1 < len(ev) / len(qs) < 0.3
    # reordering or dropping other rows never moves a question to the other side
    train2, ev2 = split_questions(list(reversed(qs[10:])), 0.2, seed=0)
    assert {q.id for q in ev2} == {q.id for q in ev} - {q.id for q in qs[:10]}
    _, ev3 = split_questions(qs, 0.2, seed=1)
    assert {q.id for q in ev3} != {q.id for q in ev}


def test_data_check_cli(cli, tmp_path):
    good = cli("data", "check", "sample", "--out", tmp_path / "ok")
    assert good.returncode == 0, good.stderr
    report = json.loads((tmp_path / "ok" / "check.json").read_text())
    assert report["good"] == report["rows"] >= 200
    rows = [_row(i, cop=i % 4) for i in range(10)] + [_row(3, cop=1), _row(20, opd="")]
    bad = cli("data", "check", _write_jsonl(tmp_path / "bad.jsonl", rows), "--cop-base", "0")
    assert bad.returncode == 2
    assert "row 11 (id q3): duplicate id" in bad.stdout
    assert "row 12 (id q20): empty 'opd'" in bad.stdout
    assert "Traceback" not in bad.stderr
    missing = cli("data", "check", tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "not found" in missing.stderr


# --- bad data files and output paths: exit 2 before the work, naming the file (in-process CLI: fast) ------------
def _main(*args) -> int:
    from edgemed.cli.main import main

    return main([str(a) for a in args])


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.jsonl", b"", "no rows"),
        ("blank.jsonl", b"  \n\n\t \n", "no rows"),
        ("empty.csv", b"", "no rows"),
        ("rows.parquet", b"PAR1 not really parquet", "not a readable Parquet file"),
        ("nested.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
        ("nested.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("binary.jsonl", bytes(range(256)) * 8, "not UTF-8"),
        ("bigint.jsonl", b'{"id": "a", "cop": ' + b"9" * 5000 + b"}\n", "cannot be read"),
        ("bigint.json", b"[" + b"9" * 5000 + b"]", "cannot be read"),
    ],
)
def test_data_check_refuses_empty_and_corrupt_files(tmp_path, capsys, name, content, needle):
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    path = tmp_path / name
    path.write_bytes(content)
    assert _main("data", "check", path) == 2
    err = capsys.readouterr().err
    assert needle in err and str(path) in err and "Traceback" not in err


def test_output_folder_problems_exit_2_before_reading_anything(tmp_path, capsys, monkeypatch):
    from edgemed import fsutil

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert _main("data", "check", "sample", "--out", a_file) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert _main("data", "check", "sample", "--out", a_file / "below") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    monkeypatch.setattr(fsutil, "_read_only", lambda path: True)
    assert _main("data", "check", "sample", "--out", tmp_path / "ro") == 2
    assert "read-only file system" in capsys.readouterr().err
    monkeypatch.setattr(fsutil, "_read_only", lambda path: False)
    monkeypatch.setattr(fsutil, "free_bytes", lambda path: 0)
    assert _main("info", "--out", tmp_path / "full") == 2
    assert "no space left" in capsys.readouterr().err
    monkeypatch.setattr(fsutil, "free_bytes", lambda path: 1 << 40)
    monkeypatch.setattr(fsutil.os, "access", lambda path, mode: False)
    assert _main("report", tmp_path, tmp_path, "--out", tmp_path / "nw") == 2
    assert "not writable" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in ("ro", "full", "nw"))


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), Exception("No space left on device (os error 28)"),
     RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: file write failed")],
)
def test_disk_full_during_the_work_exits_2_naming_the_path(tmp_path, capsys, monkeypatch, error):
    """A full disk while writing (also as native libraries report it: tokenizers, torch.save) is exit 2 naming the
    output and what was kept, never 'internal error'."""
    from edgemed import fsutil

    def full(path, data):
        raise error

    monkeypatch.setattr(fsutil, "atomic_write_json", full)
    assert _main("data", "check", "sample", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "no space left on the device" in err and str(tmp_path / "out") in err and "kept" in err
    assert "internal error" not in err


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    import os

    from edgemed.fsutil import atomic_dir

    final = tmp_path / "model"
    dead, live = tmp_path / ".model.999999999.a1.partial", tmp_path / f".model.{os.getpid()}.b2.partial"
    dead.mkdir()
    live.mkdir()
    with atomic_dir(final) as tmp:
        (tmp / "w").write_text("x")
    assert (final / "w").is_file() and not dead.exists() and live.exists()
