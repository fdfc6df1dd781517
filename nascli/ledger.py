"""A promotion's finished rows kept in a folder of their own, so that a promotion longer than one
machine's life resumes on another (`retrain --ledger DIR`).

A run folder lives on one machine; a BCCD promotion takes five hours of two cores, more than a
session holds a machine. Each finished row (grid or final) is written to DIR/rows.json with its
metrics, its training history and, for a final row, its test detections (DIR/<row>.detections.json.gz:
what the image bootstrap reads). DIR is small enough to commit. On another machine `retrain` with
the same request rebuilds a row from DIR instead of training it, if the row's *fingerprint*
matches: the row's name (its recipe and architecture, retrain.recipe_key) and the content of what
it was trained from - the baseline's weights and the train, meta-val and test jsons. A rebuilt
baseline that is not bit-identical, or changed data, trains the row again.

A row rebuilt from DIR has no trained weights: its checkpoint is a *stand-in* (the architecture
with seeded initial weights, its history and config, `stand_in` saying so), enough to time it
(trained and stand-in versions of BCCD's promoted detectors timed within 2 % of each other) and to
report it, refused by everything that needs
the weights (evaluate, export).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from .cache.format import sha256_file, tensors_digest
from .errors import DataError
from .files import written_whole

ROWS = "rows.json"
FORMAT = 1


def fingerprint(name: str, sources: dict) -> str:
    """A row's identity across machines: its name and the digests of what it was trained from."""
    text = json.dumps({"row": name, **sources}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RowLedger:
    """DIR/rows.json: {format, rows: {"<row name> <fingerprint>": {fingerprint, sources, status,
    trial, genotype, reward, metrics, record, detections}}}, rewritten whole (atomically) after
    each row. Rows of one name made from other inputs stay beside each other: nothing is lost."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / ROWS
        self.rows = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{self.path}: not valid JSON ({e.msg}, line {e.lineno})") from None
            if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("rows"), dict):
                raise DataError(f"{self.path}: field 'format' is not {FORMAT} with a 'rows' object; "
                                f"not a nascli promotion ledger")
            self.rows = data["rows"]

    def find(self, name: str, print_: str) -> dict | None:
        """The kept row of this name and fingerprint, or None."""
        return self.rows.get(f"{name} {print_}")

    def differs(self, name: str, sources: dict) -> list[str] | None:
        """What the kept rows of this name were trained from that differs from `sources` (why
        none is reused: e.g. ['baseline'] for a rebuilt baseline that is not bit-identical);
        None if no row of this name is kept."""
        kept = [row.get("sources", {}) for key, row in self.rows.items() if key.rsplit(" ", 1)[0] == name]
        if not kept:
            return None
        return sorted({k for was in kept for k in set(was) | set(sources) if was.get(k) != sources.get(k)})

    def keep(self, name: str, print_: str, row: dict, record: dict, detections: Path | None,
             sources: dict | None = None) -> None:
        """Records one finished row: its run.db fields, its checkpoint's `record` (history,
        model_args, classes: what a stand-in is built from) and its detections file, compressed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        kept = None
        if detections is not None and Path(detections).is_file():
            kept = f"{name.replace('/', '__')}-{print_}.detections.json.gz"
            # mtime 0: the same detections make the same bytes, so a rerun leaves no diff to commit
            (self.folder / kept).write_bytes(gzip.compress(Path(detections).read_bytes(), 9, mtime=0))
        self.rows[f"{name} {print_}"] = {"fingerprint": print_, "sources": sources or {}, "status": row["status"],
                                         "trial": row["trial"], "genotype": row["genotype"], "reward": row["reward"],
                                         "metrics": row["metrics"], "record": record, "detections": kept}
        with written_whole(self.path) as tmp:
            tmp.write_text(json.dumps({"format": FORMAT, "rows": self.rows}, indent=1, sort_keys=True) + "\n")

    def detections(self, row: dict) -> bytes | None:
        """A kept row's detections json (bytes), if it has one."""
        if not row.get("detections"):
            return None
        path = self.folder / row["detections"]
        if not path.is_file():
            raise DataError(f"{self.path}: field 'detections' names {row['detections']}, which is not in {self.folder}")
        return gzip.decompress(path.read_bytes())
