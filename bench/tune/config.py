"""``TuneConfig``: every option of ``edgemed tune``, declared once (the CLI's ``--help`` is generated from it), and
the budgets it parses, checked before any work."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgemed.errors import EdgemedError


@dataclass
class TuneConfig:
    """Search the quantization space for the artifact that minimises an objective within quality and speed budgets.

    Stage 1 exports every candidate of the grid (cached by the merged model's sha256, format and settings) and
    measures its KL divergence from the merged model on a growing share of the fidelity tokens, only as far as
    its 95% interval needs to decide the budget; stage 2 runs the full bench on the survivors, in objective order,
    and stops when the rest cannot win. Writes OUT/tune.json, tune.md, pareto.png, the stage-2 bench in OUT/bench
    and the chosen artifact in OUT/best/<format>. Exit 0 when a candidate meets every budget, 1 when none does,
    2 for bad input.

    Args:
        max_kld: budget on the mean KL divergence from the reference (nats/token): a candidate meets it only when
            its whole 95% interval lies at or below it.
        min_top1_agreement: budget on the share of tokens whose top-1 matches the reference's (0-1): met when the
            interval's lower end reaches it.
        max_memory: budget on peak memory while serving, e.g. 800MB (stage 2).
        max_size: budget on the artifact's size on disk, e.g. 100MB.
        min_tg: budget on generation tokens/s (the bench's tg) (stage 2).
        max_p95_ms: budget on the p95 answer latency, e.g. 250 or 250ms (stage 2).
        profile: an edge-board profile (rpi5, rpi4, ...): its memory ceiling is a memory budget unless --max-memory
            is given, and the stage-2 bench estimates the board's tokens/s.
        objective: what the choice minimises among the candidates within budget: size on disk, peak memory, p95
            answer latency, or maximises tg.
        runtimes: runtimes whose formats are searched: gguf, onnx, openvino.
        space: TOML grid to search instead of the bundled tune_space.toml (same schema).
        cache: folder for the quantized candidates and their measurements, shared by every tune of the same model
            (default: tune-cache beside the merged model).
        fractions: shares of the fidelity sequences stage 1 measures in turn, growing only while the interval
            straddles a budget.
        data: evaluation questions (default: the merged model's recorded evaluation side, as bench).
        limit: at most this many evaluation questions (fidelity sequences and bench accuracy).
        threads: CPU threads of every runtime and export (default: physical cores).
        n_prompt: tokens of the stage-2 bench's prompt-processing test (pp).
        n_gen: tokens of the stage-2 bench's generation test (tg).
        repetitions: repetitions of each stage-2 bench throughput test and latency prompt.
        verify: check each exported candidate against the merged model, as edgemed export does.
        timeout: seconds one measurement (a stage-1 pass or one artifact's bench) may run before it is killed.
        resume: continue the tune in OUT (kept: its stage-2 bench results; the cache is reused in any case).
        out: folder for tune.json, tune.md, pareto.png, bench/ and best/.
    """

    max_kld: float | None = None
    min_top1_agreement: float | None = None
    max_memory: str | None = None
    max_size: str | None = None
    min_tg: float | None = None
    max_p95_ms: str | None = None
    profile: str | None = None
    objective: Literal["size", "memory", "latency", "tg"] = "size"
    runtimes: list[str] = field(default_factory=lambda: ["gguf", "onnx", "openvino"])
    space: Path | None = None
    cache: Path | None = None
    fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    data: str | None = None
    limit: int | None = None
    threads: int | None = field(default=None, metadata={"flags": ["-t"]})
    n_prompt: int = field(default=512, metadata={"flags": ["-p"]})
    n_gen: int = field(default=64, metadata={"flags": ["-n"]})
    repetitions: int = field(default=3, metadata={"flags": ["-r"]})
    verify: bool = True
    timeout: float = 1800.0
    resume: bool = False
    out: Path = Path("runs/tune")

    def budgets(self) -> dict[str, Any]:
        """The parsed budgets (bytes, ms, ratios); EdgemedError naming the flag for a bad one."""
        from edgemed.bench.units import parse_ms, parse_size

        b: dict[str, Any] = {"max_kld": self.max_kld, "min_top1_agreement": self.min_top1_agreement,
                             "min_tg": self.min_tg, "profile": None}
        if self.max_kld is not None and not (math.isfinite(self.max_kld) and self.max_kld >= 0):
            raise EdgemedError(f"--max-kld must be a non-negative number of nats per token, got {self.max_kld}")
        top1 = self.min_top1_agreement
        if top1 is not None and not (0 <= top1 <= 1):
            raise EdgemedError(f"--min-top1-agreement is a share between 0 and 1, got {top1}")
        if self.min_tg is not None and not (math.isfinite(self.min_tg) and self.min_tg > 0):
            raise EdgemedError(f"--min-tg must be a positive number of tokens/s, got {self.min_tg}")
        b["max_memory_bytes"] = parse_size(self.max_memory, "--max-memory") if self.max_memory is not None else None
        b["max_size_bytes"] = parse_size(self.max_size, "--max-size") if self.max_size is not None else None
        b["max_p95_ms"] = parse_ms(self.max_p95_ms, "--max-p95-ms") if self.max_p95_ms is not None else None
        for flag, raw, key, example in (("--max-memory", self.max_memory, "max_memory_bytes", "800MB"),
                                        ("--max-size", self.max_size, "max_size_bytes", "100MB"),
                                        ("--max-p95-ms", self.max_p95_ms, "max_p95_ms", "250ms")):
            if b[key] is not None and not (math.isfinite(b[key]) and b[key] > 0):
                raise EdgemedError(f"{flag} {raw}: a budget must be more than 0 (nothing fits in it); give e.g. "
                                   f"{example}")
        if self.profile:
            from edgemed.bench.profiles import get_profile

            board = get_profile(self.profile)
            b["profile"] = board.name
            if b["max_memory_bytes"] is None:
                b["max_memory_bytes"] = board.memory_ceiling_bytes
                b["max_memory_from"] = f"profile {board.name}"
        return b

    def validate(self) -> TuneConfig:
        """Raise EdgemedError (exit 2) naming the flag for any value out of range; return self."""
        from edgemed.bench.tune.space import RUNTIMES

        self.budgets()
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown or not self.runtimes:
            raise EdgemedError(f"--runtimes: unknown runtime(s) {', '.join(unknown) or '(none given)'}; choose from "
                               f"{', '.join(RUNTIMES)}")
        fr = list(self.fractions)
        if not fr or any(not (0 < f <= 1) for f in fr) or fr != sorted(set(fr)):
            raise EdgemedError(f"--fractions {','.join(map(str, fr))}: give increasing shares in (0, 1], e.g. "
                               "0.25,0.5,1")
        if fr[-1] != 1.0:
            self.fractions = [*fr, 1.0]  # the last pass is always every sequence
        for name, low in {"limit": 1, "threads": 1, "n_prompt": 1, "n_gen": 2, "repetitions": 1}.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise EdgemedError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
        if not (self.timeout >= 1 and math.isfinite(self.timeout)):
            raise EdgemedError(f"--timeout must be at least 1 second, got {self.timeout}")
        if self.space is not None and not Path(self.space).is_file():
            what = "is a directory" if Path(self.space).is_dir() else "does not exist"
            raise EdgemedError(f"--space {self.space} {what}; give a TOML grid like the bundled tune_space.toml")
        from edgemed.bench.tune.space import check_space

        check_space(self.space, self.runtimes)  # parsed, expanded and every value checked before any work
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_pairs(cls, pairs: list[str], **fixed: Any) -> TuneConfig:
        """A config from ``KEY=VALUE`` strings (``edgemed pipeline --tune max-kld=0.2,objective=size``), typed by
        the fields; `fixed` values (out, threads) are set by the caller."""
        import dataclasses
        import typing

        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)} - set(fixed)
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            name = key.strip().lstrip("-").replace("-", "_")
            if not sep or name not in names:
                raise EdgemedError(f"--tune {pair}: give KEY=VALUE with KEY one of "
                                   f"{', '.join(sorted(n.replace('_', '-') for n in names))}")
            values[name] = _typed(hints[name], raw.strip(), f"--tune {pair}")
        return cls(**values, **fixed).validate()


def _typed(tp: Any, raw: str, where: str) -> Any:
    """`raw` as the field type `tp` (Optional/list/Literal/bool/int/float/Path/str)."""
    import types
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    origin = typing.get_origin(tp)
    try:
        if origin is list:
            inner = typing.get_args(tp)[0]
            return [inner(v) for v in raw.split(";") if v]
        if origin is Literal:
            if raw not in typing.get_args(tp):
                raise ValueError(f"choose from {', '.join(typing.get_args(tp))}")
            return raw
        if tp is bool:
            if raw.lower() not in ("true", "false", "on", "off", "1", "0"):
                raise ValueError("give true or false")
            return raw.lower() in ("true", "on", "1")
        return tp(raw)
    except ValueError as exc:
        raise EdgemedError(f"{where}: {exc}") from None
