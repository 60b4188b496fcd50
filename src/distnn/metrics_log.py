"""``metrics.jsonl``: one JSON record per evaluation, appended as training goes.

Appending is not atomic: a crash mid-append leaves a *torn* last line, without its
newline and not valid JSON. That one damage is expected, so it is repaired on resume
(``repair_torn_tail``) and skipped with a warning when reading (``read_metrics``). Any
other bad line is real damage, refused with the file, line and field named, since a
curve drawn from it, or a run resumed on it, would be silently wrong.
"""

import json
import sys
from pathlib import Path

from distnn.atomic import atomic_write
from distnn.errors import UsageError
from distnn.guards import regular_file

METRICS_NAME = "metrics.jsonl"
# Fields every record must hold as numbers; NaN is allowed (a diverged run logs it).
NUMERIC_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
DAMAGED = "the metrics log is damaged; remove the bad line or train again"


def _read_text(path: Path) -> str:
    path = regular_file(path, "metrics log")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"metrics log {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"metrics log {path} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start}); {DAMAGED}") from None


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


def torn_tail(text: str) -> str | None:
    """The last line of ``text`` if it is torn (no trailing newline and not JSON), else None."""
    if not text or text.endswith("\n"):
        return None
    last = text.rsplit("\n", 1)[-1]
    return None if not last.strip() or _is_json(last) else last


def check_record(record, path: Path, number: int) -> dict:
    """``record`` if it is a JSON object with every numeric field; otherwise a UsageError
    naming ``path``, the line ``number`` and the field."""
    if not isinstance(record, dict):
        raise UsageError(f"{path}: line {number} is a JSON {type(record).__name__}, not an "
                         f"object; {DAMAGED}")
    for field in NUMERIC_FIELDS:
        value = record.get(field)
        if type(value) not in (int, float):
            problem = "is missing" if field not in record else f"is {value!r:.40}, not a number"
            raise UsageError(f"{path}: line {number}: {field!r} {problem}; {DAMAGED}")
    epoch = record["epoch"]
    if type(epoch) is not int or epoch < 0:
        raise UsageError(f"{path}: line {number}: 'epoch' is {epoch!r}, not an integer >= 0; "
                         f"{DAMAGED}")
    for field in ("train_accuracy", "test_accuracy"):
        if not 0 <= record[field] <= 1:
            raise UsageError(f"{path}: line {number}: {field!r} is {record[field]!r}, not in "
                             f"[0, 1]; {DAMAGED}")
    return record


def read_metrics(path) -> list[dict]:
    """Every record of the metrics log at ``path``, in order, each checked by
    ``check_record``. A torn last line is skipped with a one-line warning on stderr."""
    path = Path(path)
    text = _read_text(path)
    if torn_tail(text) is not None:
        sys.stderr.write(f"distnn: warning: {path}: the last line is incomplete (a run stopped "
                         "while writing it); it is ignored\n")
        text = text.rsplit("\n", 1)[0] if "\n" in text else ""
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise UsageError(f"{path}: line {number} is not JSON ({reason}); {DAMAGED}") from None
        records.append(check_record(record, path, number))
    return records


def repair_torn_tail(path) -> bool:
    """Cut a torn last line off the metrics log at ``path`` (so that the next append starts
    on a line of its own), and end a complete last line that lacks its newline with one.
    Returns whether a torn line was removed."""
    path = Path(path)
    text = _read_text(path)
    torn = torn_tail(text)
    if torn is None:
        if text and not text.endswith("\n"):
            _rewrite(path, len(text.encode()), b"\n")
        return False
    _rewrite(path, len(text.encode()) - len(torn.encode()), b"")
    return True


def _rewrite(path: Path, keep_bytes: int, append: bytes) -> None:
    try:
        with open(path, "r+b") as stream:
            stream.truncate(keep_bytes)
            stream.seek(keep_bytes)
            stream.write(append)
    except OSError as exc:
        raise UsageError(f"metrics log {path}: cannot repair it ({exc.strerror})") from None


def keep_through_epoch(path, epoch: int) -> list[dict]:
    """Resume's view of the log: repair a torn tail, then keep (atomically) only the
    records up to ``epoch``, the checkpoint's, since later ones will be evaluated again.
    Returns the records kept."""
    path = Path(path)
    repair_torn_tail(path)
    kept = [record for record in read_metrics(path) if record["epoch"] <= epoch]
    text = "".join(json.dumps(record) + "\n" for record in kept)
    try:
        atomic_write(path, lambda stream: stream.write(text.encode()))
    except OSError as exc:
        raise UsageError(f"metrics log {path}: cannot rewrite it ({exc.strerror})") from None
    return kept
