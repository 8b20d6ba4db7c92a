"""The README's command blocks, run as a reader would paste them, so a renamed flag breaks the build, not the reader.

Every ```bash block of README.md is one test case:
- every ``edgemed COMMAND`` it names must have a working ``--help`` (exit 0), and every flag its commands use must
  be one that command's ``--help`` lists (a deprecated alias is hidden there, so the README must use the new name);
- the commands this machine can run from a fresh clone are run, in a scratch folder that holds the repository's
  files (so ``--out runs/...`` lands there): ``edgemed info``, ``edgemed data check``, and ``edgemed eval`` of a
  model alias (the embedded model, its ``--limit`` capped so the run stays short);
- a block whose first lines carry ``# needs: cuda`` (or ``rpi5``, ...) is checked for its flags and then skipped
  with that reason: its hardware is not here.
The rest (train, export, bench, ...) need earlier steps' outputs and minutes of CPU: the pipeline tests run them.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from conftest import REPO, run_cli

README = REPO / "README.md"
EVAL_LIMIT = 8  # questions: enough to draw every table of eval's output, short enough for the test suite
RUNNABLE = {"info", "data check", "eval"}  # eval only of a model alias, below
ALIASES = {"smollm2-135m", "tiny-random"}
_NEEDS = re.compile(r"^#\s*needs:\s*(.+?)\s*$")
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


@dataclass
class Block:
    line: int  # 1-based line of the opening fence in README.md
    heading: str
    lines: list[str]
    needs: str | None = None
    commands: list[list[str]] = field(default_factory=list)  # each an `edgemed ...` command, split like a shell

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")[:40]
        return f"L{self.line}-{slug or 'top'}"


def shell_lines(lines: list[str]) -> list[str]:
    """The block's shell lines with backslash continuations joined."""
    out, pending = [], ""
    for raw in lines:
        text = raw.rstrip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        out.append(pending + text)
        pending = ""
    if pending:
        out.append(pending)
    return out


def parse_readme(text: str) -> list[Block]:
    """Every ```bash block with its heading, its `# needs:` mark and its edgemed commands."""
    blocks: list[Block] = []
    heading, current = "", None
    for n, line in enumerate(text.splitlines(), 1):
        if current is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.strip() == "```bash":
                current = Block(n, heading, [])
            continue
        if line.strip() == "```":
            blocks.append(current)
            current = None
        else:
            current.lines.append(line)
    for b in blocks:
        for line in b.lines:
            mark = _NEEDS.match(line.strip())
            if mark:
                b.needs = mark.group(1)
        for line in shell_lines(b.lines):
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                raise AssertionError(f"README.md block at line {b.line}: cannot split {line!r} like a shell: "
                                     f"{exc}") from exc
            if words and words[0] == "edgemed":
                b.commands.append(words)
    return blocks


def command_name(words: list[str]) -> str:
    """'data check' for `edgemed data check ...`, else the first word after edgemed."""
    return " ".join(words[1:3]) if words[1:2] == ["data"] else words[1]


def flags_used(words: list[str]) -> list[str]:
    """The options a command line passes (`--out DIR`, `--x=y`, `-t 2`), not negative numbers."""
    return [w.split("=", 1)[0] for w in words[1:] if re.match(r"^--?[A-Za-z]", w)]


@cache
def help_of(name: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `edgemed NAME --help`, run as the installed command would be."""
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli.main", *name.split(), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))


def test_the_readme_has_command_blocks_and_marks_the_hardware_ones():
    commands = {command_name(w) for b in BLOCKS for w in b.commands}
    assert {"info", "data check", "eval", "train", "bench", "pipeline", "report"} <= commands, commands
    assert any(b.needs for b in BLOCKS), "no block is marked '# needs: ...' (the GPU and board steps must be)"


def inline_commands(text: str) -> list[list[str]]:
    """Every inline code span of the README that is an edgemed command (`edgemed pipeline --bench-formats all`)."""
    return [shlex.split(span) for span in re.findall(r"`(edgemed [^`]+)`", text)]


def test_every_command_the_readme_names_in_its_text_has_help_and_its_flags():
    spans = inline_commands(README.read_text(encoding="utf-8"))
    assert spans
    for words in spans:
        name = command_name(words)
        code, text = help_of(name)
        assert code == 0, f"README names `edgemed {name}`, whose --help exited {code}:\n{text[-2000:]}"
        unknown = [f for f in flags_used(words) if f not in set(_FLAG.findall(text))]
        assert not unknown, f"README's `{shlex.join(words)}` uses {unknown}, not in `edgemed {name} --help`"


def _runs_here(words: list[str]) -> bool:
    name = command_name(words)
    if name not in RUNNABLE:
        return False
    if name == "eval":
        positional = [w for w in words[2:] if not w.startswith("-")]
        return bool(positional) and positional[0] in ALIASES
    return True


def _param(block: Block):
    """A block that evaluates the real SmolLM2 carries the `slow` marker (the marker's meaning)."""
    real = any(_runs_here(w) and "smollm2-135m" in w for w in block.commands) and not block.needs
    return pytest.param(block, id=block.id, marks=[pytest.mark.slow] if real else [])


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_readme_block(block: Block, tmp_path, request):
    for words in block.commands:
        name = command_name(words)
        code, text = help_of(name)
        assert code == 0, f"README line {block.line}: `edgemed {name} --help` exited {code}:\n{text[-2000:]}"
        known = set(_FLAG.findall(text))
        unknown = [f for f in flags_used(words) if f not in known]
        assert not unknown, (f"README line {block.line}: `{shlex.join(words)}` uses {unknown}, which "
                             f"`edgemed {name} --help` does not list")
    if block.needs:
        pytest.skip(f"needs {block.needs}: not on this machine (flags and --help checked)")
    runnable = [w for w in block.commands if _runs_here(w)]
    if not runnable:
        return  # every command needs an earlier step's output: --help and flags checked above
    if any(command_name(w) == "eval" for w in runnable):
        request.getfixturevalue("smollm2_model")  # the alias built once per session, in the tests' own cache
    scratch = _scratch(tmp_path)
    for words in runnable:
        args = _capped(words[1:])
        proc = run_cli(*args, cwd=scratch, timeout=600)
        assert proc.returncode == 0, (f"README line {block.line}: `{shlex.join(words)}` exited {proc.returncode}:\n"
                                      f"{proc.stderr[-3000:]}")
        assert "Traceback" not in proc.stderr


def _capped(args: list[str]) -> list[str]:
    """eval's --limit capped at EVAL_LIMIT (added when absent); everything else as written."""
    if args[0] != "eval":
        return args
    out, i = [], 0
    while i < len(args):
        if args[i] == "--limit" and i + 1 < len(args):
            out += ["--limit", str(min(int(args[i + 1]), EVAL_LIMIT))]
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out if "--limit" in out else out + ["--limit", str(EVAL_LIMIT)]


def _scratch(tmp_path: Path) -> Path:
    """A folder that looks like the repository's root (its top-level files linked), with no runs/ of its own."""
    root = tmp_path / "clone"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {"runs", ".git"}:
            (root / entry.name).symlink_to(entry)
    return root


def test_info_lists_the_board_profiles(tmp_path):
    """`edgemed info` shows every profile of the bundled profiles.toml (the 4 GB Pi 5 too) with its board and
    memory, on the console and in info.json, and says that its figures are estimates."""
    from edgemed.bench.gate.budget import tomllib_module

    toml = tomllib_module().loads((REPO / "bench" / "profiles.toml").read_text(encoding="utf-8"))
    proc = run_cli("info", "--out", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["profile"]: r for r in json.loads((tmp_path / "info.json").read_text())["profiles"]}
    assert list(rows) == list(toml)
    for name, table in toml.items():
        row = rows[name]
        assert row["memory_ceiling_gb"] == table["memory_ceiling_gb"] and row["threads"] == table["threads"]
        assert row["aliases"] == table.get("aliases", []) and table["description"].startswith(row["board"])
        assert name in proc.stdout and row["board"] in proc.stdout
    assert rows["rpi5-4gb"]["ram_gb"] == 4 and rows["rpi5-8gb"]["ram_gb"] == 8
    assert rows["rpi5-8gb"]["aliases"] == ["rpi5"]
    assert "not measurements of a board" in proc.stdout
