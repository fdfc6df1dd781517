"""The run database: one SQLite file (WAL) per run holding its trials and the strategy's state.

Every finished trial is committed before the strategy is told about it; the strategy's state is
saved in the same transaction that marks trials as told, and right after each ask, so after a
crash or a kill a resumed run re-queues what was in flight and re-runs nothing that finished.

Trial 0 is the control (the hand-designed decoder of the searched family): it is stored like a
trial but counts outside the budget and is never shown to the strategy. `scores` holds the extra
seeds of re-scored genotypes (the control and the top K), one row per (trial, seed).
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import NascliError


def pack_state(state: dict) -> bytes:
    """A strategy's state as the bytes run.db stores beside each trial."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def unpack_state(blob: bytes) -> dict:
    """The strategy state `pack_state` stored."""
    import torch

    return torch.load(io.BytesIO(blob), weights_only=True)


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    genotype TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    reward REAL,
    metrics TEXT,
    seed INTEGER NOT NULL,
    told INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS scores (
    trial INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    reward REAL,
    metrics TEXT,
    PRIMARY KEY (trial, seed)
);
CREATE TABLE IF NOT EXISTS strategy (id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL, saved REAL);
CREATE TABLE IF NOT EXISTS retrained (
    name TEXT PRIMARY KEY,
    trial INTEGER,
    genotype TEXT NOT NULL,
    reward REAL,
    status TEXT NOT NULL CHECK (status IN ('training', 'done', 'failed')),
    checkpoint TEXT,
    metrics TEXT,
    updated REAL NOT NULL
);
"""


TABLES = ("meta", "trials", "scores", "strategy", "retrained")


@dataclass(frozen=True)
class Trial:
    id: int
    genotype: str
    status: str
    reward: float | None
    metrics: dict
    seed: int
    told: bool
    created: float
    finished: float | None


class RunStore:
    """The trials and strategy state of one run directory (`<run>/run.db`)."""

    def __init__(self, run_dir, create: bool = True, readonly: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "run.db"
        if (readonly or not create) and not self.path.is_file():
            raise NascliError(f"{self.path}: no run database here (is '{run_dir}' a run folder?)")
        if self.path.is_file():
            self._check_foreign(TABLES if readonly else ("meta", "trials"))
        if readonly:  # for looking only: nothing, not even the schema, is written
            self.db = self._connect_readonly()
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise NascliError(f"{self.path}: not a nascli run database ({e})") from None

    def _connect_readonly(self):
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)

    def _check_foreign(self, required) -> None:
        """Reads an existing file before anything writes to it: a damaged or foreign database is
        an error that leaves it as it was (opening it read-write would add our tables to it)."""
        try:
            ro = self._connect_readonly()
            try:
                tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                problem = ro.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                ro.close()
        except sqlite3.DatabaseError as e:
            raise NascliError(f"{self.path}: not a nascli run database ({e})") from None
        if problem != "ok":
            raise NascliError(f"{self.path}: the run database is damaged ({' '.join(problem.split())[:120]})")
        missing = sorted(set(required) - tables)
        if missing:
            raise NascliError(f"{self.path}: table '{missing[0]}' is missing; not a nascli run database")

    def decode_json(self, text, where: str):
        """A JSON column's value; a damaged one is an error naming the table, row and field."""
        if text is None or text == "":
            return None
        try:
            return json.loads(text)
        except (ValueError, TypeError, RecursionError):
            raise NascliError(f"{self.path}: {where} is not valid JSON") from None

    def close(self):
        self.db.close()

    # -- meta

    def set_meta(self, **values) -> None:
        with self._transaction():
            for k, v in values.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v)))

    def meta(self) -> dict:
        return {k: self.decode_json(v, f"meta '{k}'") for k, v in self.db.execute("SELECT key, value FROM meta")}

    # -- trials

    def add_control(self, genotype: str) -> None:
        """Records the control as trial 0 (done once every seed of it is scored; never told)."""
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO trials (id, genotype, status, seed, told, created) "
                            "VALUES (0, ?, 'pending', 0, 1, ?)", (genotype, time.time()))

    def control(self) -> Trial | None:
        return self.trial(0)

    def add_pending(self, genotypes: list[str], seeds: list[int], state: bytes) -> list[int]:
        """Records asked trials and the strategy state right after the ask, atomically."""
        now = time.time()
        with self._transaction():
            ids = [self.db.execute("INSERT INTO trials (genotype, status, seed, created) VALUES (?, 'pending', ?, ?)",
                                   (g, s, now)).lastrowid for g, s in zip(genotypes, seeds)]
            self._save_state(state)
        return ids

    def finish(self, trial_id: int, status: str, reward: float | None, metrics: dict) -> None:
        with self._transaction():
            self.db.execute("UPDATE trials SET status = ?, reward = ?, metrics = ?, finished = ? WHERE id = ?",
                            (status, reward, json.dumps(metrics), time.time(), trial_id))

    def mark_told(self, trial_ids: list[int], state: bytes) -> None:
        with self._transaction():
            self.db.executemany("UPDATE trials SET told = 1 WHERE id = ?", [(i,) for i in trial_ids])
            self._save_state(state)

    def _select(self, where: str, params: tuple = (), order: str = "id") -> list[Trial]:
        """Trials matching a fixed clause of this class (never a caller's SQL)."""
        rows = self.db.execute(f"SELECT id, genotype, status, reward, metrics, seed, told, created, finished "
                               f"FROM trials WHERE {where} ORDER BY {order}", params)
        return [Trial(r[0], r[1], r[2], r[3], self.decode_json(r[4], f"trials row {r[0]} field 'metrics'") or {}, r[5],
                      bool(r[6]), r[7], r[8]) for r in rows]

    def trials(self, control: bool = True) -> list[Trial]:
        """Every trial in the order asked; the control (trial 0) first, unless `control` is False."""
        return self._select("1" if control else "id > 0")

    def trial(self, trial_id: int) -> Trial | None:
        """One trial by id (0: the control); None if the run has no such trial."""
        rows = self._select("id = ?", (int(trial_id),))
        return rows[0] if rows else None

    def worst_reward(self) -> float | None:
        """The lowest reward a finished trial (or the control) scored; None before any."""
        return self.db.execute("SELECT MIN(reward) FROM trials WHERE status = 'done'").fetchone()[0]

    def pending(self) -> list[Trial]:
        """Search trials asked but not finished (the control, trial 0, is scored on its own)."""
        return self._select("status = 'pending' AND id > 0")

    def finished_untold(self) -> list[Trial]:
        return self._select("status != 'pending' AND told = 0")

    def top(self, k: int | None = None) -> list[Trial]:
        """The k best finished search trials by their (single-seed) search reward (all: k None)."""
        return self._select("status = 'done' AND id > 0", order="reward DESC, id")[:k]

    def count(self, skipped: bool = False) -> int:
        """Search trials asked so far (the budget; the control and candidates skipped untrained for
        being over the latency target are outside it, unless `skipped`: a supernet epoch was
        spent on each)."""
        where = "" if skipped else " AND json_extract(metrics, '$.skipped') IS NULL"
        return self.db.execute(f"SELECT COUNT(*) FROM trials WHERE id > 0{where}").fetchone()[0]

    # -- re-scoring seeds

    def add_score(self, trial_id: int, seed: int, status: str, reward: float | None, metrics: dict) -> None:
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
                            (trial_id, seed, status, reward, json.dumps(metrics)))

    def score_metrics(self, trial_id: int) -> dict:
        """The metrics of a trial's first re-scoring seed ({} if none): its cost, for the control."""
        row = self.db.execute("SELECT metrics FROM scores WHERE trial = ? ORDER BY seed", (trial_id,)).fetchone()
        return (self.decode_json(row[0], f"scores of trial {trial_id} field 'metrics'") or {}) if row else {}

    def scores(self, trial_id: int | None = None, promotion: bool = False) -> dict:
        """{trial: {seed: reward or None (failed)}} of the re-scoring seeds (of one trial if given).
        Scores a promotion added (retrain's proxy reward of a trial the search did not re-score,
        metrics 'promotion') are apart: only with `promotion`, so they never move the search's verdict."""
        clauses, args = ([] if promotion else ["json_extract(metrics, '$.promotion') IS NULL"]), ()
        if trial_id is not None:
            clauses, args = clauses + ["trial = ?"], (trial_id,)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        out: dict = {}
        try:
            rows = self.db.execute(f"SELECT trial, seed, status, reward FROM scores {where} ORDER BY trial, seed",
                                   args).fetchall()
        except sqlite3.OperationalError as e:  # json_extract on a damaged metrics field
            raise NascliError(f"{self.path}: table 'scores' field 'metrics' is damaged ({e})") from None
        for trial, seed, status, reward in rows:
            out.setdefault(trial, {})[seed] = reward if status == "done" else None
        return out

    # -- promoted architectures (retrain)

    def set_retrained(self, name: str, trial: int | None, genotype: str, reward: float | None,
                      status: str, checkpoint: str | None, metrics: dict) -> None:
        """Records (or updates) one promoted architecture: 'training' before its retraining
        starts, then 'done' with its evaluation or 'failed' with the reason in `metrics`. A
        checkpoint inside the run folder is stored relative to it, so a moved run still finds it."""
        if checkpoint:
            try:
                checkpoint = str(Path(checkpoint).resolve().relative_to(self.run_dir.resolve()))
            except ValueError:  # outside the run: kept as given
                pass
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO retrained VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (name, trial, genotype, reward, status, checkpoint, json.dumps(metrics), time.time()))

    def retrained(self) -> list[dict]:
        rows = self.db.execute("SELECT name, trial, genotype, reward, status, checkpoint, metrics "
                               "FROM retrained ORDER BY updated")
        return [{"name": r[0], "trial": r[1], "genotype": r[2], "reward": r[3], "status": r[4],
                 "checkpoint": self._checkpoint_path(r[5]),
                 "metrics": self.decode_json(r[6], f"retrained row '{r[0]}' field 'metrics'") or {}}
                for r in rows]

    def _checkpoint_path(self, stored: str | None) -> str | None:
        """A row's checkpoint as a usable path: rows written relative to the run folder (retrain/...)
        are joined to where the run is now; older rows kept the path they were given."""
        if stored and not Path(stored).is_absolute() and Path(stored).parts[0] == "retrain":
            return str(self.run_dir / stored)
        return stored

    # -- strategy state

    def load_state(self) -> bytes | None:
        row = self.db.execute("SELECT state FROM strategy WHERE id = 1").fetchone()
        return row[0] if row else None

    def save_state(self, state: bytes) -> None:
        """The strategy's state on its own (a strategy that stopped asking: why, and where)."""
        with self._transaction():
            self._save_state(state)

    def _save_state(self, state: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO strategy VALUES (1, ?, ?)", (state, time.time()))

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): each call is all or nothing on disk."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
