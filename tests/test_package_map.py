"""README.md's "The package" lists every module under ambcore/ exactly once, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> set[str]:
    names = set()
    for path in (ROOT / "ambcore").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _listed() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## The package\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(ambcore[\w.]*)` \|", section, re.M)


def test_package_map_lists_every_module_once():
    listed, modules = _listed(), _modules()
    assert len(listed) == len(set(listed)), "listed twice: " + ", ".join(
        sorted({m for m in listed if listed.count(m) > 1})
    )
    missing, stale = sorted(modules - set(listed)), sorted(set(listed) - modules)
    assert not missing, f"add to README.md 'The package': {', '.join(missing)}"
    assert not stale, f"listed in README.md 'The package' but not in ambcore/: {', '.join(stale)}"
