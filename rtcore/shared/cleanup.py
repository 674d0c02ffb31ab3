"""Remove the shared-memory segments of rtcore processes that died without cleaning up: ``rtcore cleanup``.

A run unlinks its segments when it ends, also after an error, Ctrl-C or SIGTERM. A process killed by
SIGKILL (or the OOM killer) cannot: its segments stay in ``/dev/shm`` until someone removes them. Every
run does this for its own prefix (``$RTCORE_SHM_PREFIX``, else ``rtcore``) when it starts; this command
does it now, for the segments of every prefix (runs under another ``$RTCORE_SHM_PREFIX`` too), or of one
with ``--prefix``. It removes only segments whose creator (pid and process start time, both in the name)
no longer runs, so it is safe while other runs are going, and only files that are rtcore's: a name of
rtcore's format (``<prefix>-<kind>-<pid>.<start>-<8 hex>``) and, for a prefix other than the current
one, rtcore's segment header in the file; other programs' files in ``/dev/shm`` are never touched.

    rtcore cleanup              # remove what dead rtcore processes left behind, under any prefix
    rtcore cleanup --dry-run    # list it, remove nothing
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default=None,
                        help="only segments of this name prefix (default: every prefix; the current one is "
                             "$RTCORE_SHM_PREFIX, else 'rtcore')")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def main(args: argparse.Namespace) -> int:
    from rtcore.shared._shm import ANY_PREFIX, list_segments, reclaim_dead_segments

    prefix = args.prefix if args.prefix is not None else ANY_PREFIX
    if not prefix or "/" in prefix:
        print(f"rtcore cleanup: error: --prefix must be a non-empty name without '/', got {prefix!r}", file=sys.stderr)
        return 2
    gone = reclaim_dead_segments(prefix, dry_run=args.dry_run)
    kept = [s for s in list_segments(prefix) if s.creator_alive]
    freed = sum(s.size for s in gone)
    if args.json:
        print(json.dumps({"prefix": None if prefix == ANY_PREFIX else prefix, "dry_run": bool(args.dry_run),
                          "removed": [s.name for s in gone], "bytes": freed, "kept_live": len(kept)}))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for s in gone:
        print(f"{verb} {s.name} ({s.size / 2**20:.1f} MiB, creator pid {s.pid} is gone)")
    where = "under every prefix" if prefix == ANY_PREFIX else f"with prefix {prefix!r}"
    print(f"rtcore cleanup: {verb} {len(gone)} segment(s) {where}, {freed / 2**20:.1f} MiB; "
          f"{len(kept)} segment(s) of live processes kept")
    return 0
