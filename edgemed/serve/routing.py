"""Model names -> the artifact that answers: served ids as themselves, plus aliases from a TOML file.

    [aliases]
    medqa = {v1 = 0.9, v2 = 0.1}   # weights: A/B split, sticky per request 'user'
    stable = "v1"                   # one artifact

A reload parses and checks the whole file first and swaps the mapping in one assignment: a broken file leaves the
old mapping serving. A revert is one edit (``medqa = "v1"``) and one reload (SIGHUP or POST /admin/reload)."""

from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import EdgemedError
from edgemed.serve.errors import APIError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Routes:
    """An immutable mapping: alias -> ((artifact id, weight), ...), weights summing to 1."""

    aliases: dict[str, tuple[tuple[str, float], ...]]
    source: str = ""
    loaded_at: float = 0.0

    def pick(self, name: str, user: str | None, served: set[str]) -> tuple[str, str | None]:
        """(artifact id, alias or None) for a request's `model`; 404 when neither."""
        if name in served:
            return name, None
        targets = self.aliases.get(name)
        if targets is None:
            known = sorted(served | set(self.aliases))
            raise APIError(404, f"The model '{name}' does not exist; served: {', '.join(known)}", "model",
                           "model_not_found")
        if len(targets) == 1:
            return targets[0][0], name
        u = _unit(f"{name}\x1f{user}") if user else random.random()
        acc = 0.0
        for artifact, weight in targets:
            acc += weight
            if u < acc:
                return artifact, name
        return targets[-1][0], name

    def describe(self) -> dict:
        return {"aliases": {a: dict(t) for a, t in self.aliases.items()}, "source": self.source,
                "loaded_at": self.loaded_at}


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by `text`: the same user always lands on the same side of a split."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def load_routes(path: Path | None, served: set[str]) -> Routes:
    """Parse and check a routes file (EdgemedError naming the problem; nothing is swapped on failure)."""
    import time

    if path is None:
        return Routes({}, "", time.time())
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EdgemedError(f"cannot read the routes file {path}: {exc.strerror}; check --routes") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EdgemedError(f"{path} is not valid TOML ({exc}); fix it and reload") from None
    unknown = set(doc) - {"aliases"}
    if unknown:
        raise EdgemedError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; only [aliases] is read")
    table = doc.get("aliases", {})
    if not isinstance(table, dict):
        raise EdgemedError(f"{path}: [aliases] must be a table of name = artifact or name = {{artifact = weight}}")
    aliases: dict[str, tuple[tuple[str, float], ...]] = {}
    for alias, target in table.items():
        if alias in served:
            raise EdgemedError(f"{path}: alias '{alias}' is also a served model id; rename the alias")
        weights = {target: 1.0} if isinstance(target, str) else target
        if not isinstance(weights, dict) or not weights:
            raise EdgemedError(f"{path}: alias '{alias}' must name an artifact or a table of artifact = weight")
        for artifact, w in weights.items():
            if artifact not in served:
                raise EdgemedError(f"{path}: alias '{alias}' names '{artifact}', which is not served (served: "
                                   f"{', '.join(sorted(served))})")
            if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 or w == float("inf"):
                raise EdgemedError(f"{path}: alias '{alias}': the weight of '{artifact}' must be a number >= 0")
        total = float(sum(weights.values()))
        if total <= 0:
            raise EdgemedError(f"{path}: alias '{alias}' has no positive weight")
        aliases[alias] = tuple((a, float(w) / total) for a, w in sorted(weights.items()) if w > 0)
    return Routes(aliases, str(path), time.time())
