"""What every board page shares: the runs folder, the access token, and path confinement.

Paths arriving from the browser are names relative to the runs folder. ``resolve`` follows
symlinks and refuses (403) anything whose real path leaves the real runs folder, so ``../``
and a symlink pointing out are both refused; the error names the path as given, never the
server's absolute path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException


@dataclass
class BoardContext:
    """The board's settings, built once by ``tunesmith board`` and handed to every router."""

    runs_dir: Path
    token: str | None = None  # required (Bearer header or ?token=) when not None
    recipes_dir: Path | None = None  # shipped recipes; None: tunesmith.cli.train.recipes_dir()
    guide_dir: Path | None = None  # docs/guide of a checkout; None when absent
    extra: dict[str, object] = field(default_factory=dict)  # per-router state (jobs, engines)

    def resolve(self, relative: str) -> Path:
        """``relative`` (a path under the runs folder) resolved; 403 if it leaves the folder."""
        if "\x00" in relative:
            raise HTTPException(status_code=400, detail="a path may not hold a NUL byte")
        root = self.runs_dir.resolve()
        target = (root / relative).resolve()
        if target != root and root not in target.parents:
            raise HTTPException(status_code=403, detail=f"'{relative}' is outside the runs folder")
        return target

    def shown(self, path: Path) -> str:
        """``path`` as the browser should see it: relative to the runs folder."""
        try:
            return str(path.resolve().relative_to(self.runs_dir.resolve()))
        except ValueError:
            return path.name
