"""Progress of a long broker operation, read from its NDJSON lines (``revoke-tokens --all-tokens``).

On a terminal: a Rich progress bar on stderr while provider revocations run. Elsewhere (a pipe,
a CI log): one plain line on stderr per line the broker sends. Stdout keeps only the result, so
``--format json`` stays machine-readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from valetkey.cli.output import stderr

__all__ = ["follow_revocation"]


def _step(line: Mapping[str, Any]) -> str:
    total = int(line.get("providerTotal") or 0)
    done = total - int(line.get("providerPending") or 0)
    return (
        f"revoking at the provider: {done}/{total} "
        f"(revoked {line.get('providerRevoked', 0)}, skipped {line.get('providerSkipped', 0)}, "
        f"failed {line.get('providerFailed', 0)})"
    )


def follow_revocation(
    lines: Iterable[Mapping[str, Any]], *, tty: bool | None = None
) -> dict[str, Any]:
    """Show each progress line; return the last one (the final counts) without the progress fields."""
    console = stderr()
    bar = console.is_terminal if tty is None else tty
    last: Mapping[str, Any] = {}
    progress: Progress | None = None
    task = None
    try:
        for line in lines:
            last = line
            total = int(line.get("providerTotal") or 0)
            if total == 0:
                continue  # nothing to revoke at the provider: no progress to show
            done = total - int(line.get("providerPending") or 0)
            if not bar:
                console.print(_step(line), highlight=False)
                continue
            if progress is None:
                progress = Progress(
                    TextColumn("revoking at the provider"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("failed {task.fields[failed]}"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=False,
                )
                progress.start()
                task = progress.add_task("revoke", total=total, failed=0)
            if task is not None:
                progress.update(task, completed=done, failed=line.get("providerFailed", 0))
    finally:
        if progress is not None:
            progress.stop()
    return {k: v for k, v in last.items() if k not in ("done", "providerPending", "providerTotal")}
