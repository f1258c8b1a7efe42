"""Log lines an operator can read and a log search can index: ``--log-format text|json`` and
``--log-level``, the same for every command (``setup``).

A line names what it is about in fields (``node``, ``component``, ``certificate``,
``revision``, ``csr``, ``action``, ...), given one of two ways so call sites stay plain
``logging`` calls:

- for one line: ``log.info("renewed", extra={"certificate": name})``;
- for a stretch of work: ``with logs.fields(node=name, revision=rev):``. Every line that
  thread logs inside the block carries them, whatever module logs it (a context variable).
  A new thread starts with none: ``logs.carried(target)`` hands it the caller's.

Text (the default): ``<time> <LEVEL> <logger>: <message> key=value ...``, one line per
record (a traceback follows on its own lines). JSON: one object per line with ``time``
(RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``, the fields, and ``error``
(the traceback) when an exception is logged.

Edge cases: messages and fields carry names from hosts and other identities (certificate
subjects, file names, CSR and Node names), so the text format escapes control characters
(``decide.report.printable``: a newline in a name cannot forge a second line) and JSON is
ASCII-only (``\\u2028`` cannot split a line for a reader that splits on it). A field value
that JSON cannot carry (a path, a timedelta) is written as its ``str()``. A field never
replaces ``time``, ``level``, ``logger``, ``message`` or ``error``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import ParamSpec, TypeVar

from reconciler.decide import report

FORMATS = ("text", "json")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_CORE = ("time", "level", "logger", "message", "error")
# What every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_FIELDS: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "kucero_log_fields", default=types.MappingProxyType({})
)
P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def fields(**values: object) -> Iterator[None]:
    """Add these fields (``None`` values left out) to every line logged in the block."""
    token = _FIELDS.set({**_FIELDS.get(), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def carried(target: Callable[P, R]) -> Callable[P, R]:
    """``target`` run with the fields in force here (for ``threading.Thread(target=...)``)."""
    context = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.run(target, *args, **kwargs)

    return run


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    """The record's fields: the block's, then its own ``extra=`` (which win); ``None`` values
    are left out, as ``fields`` leaves them out."""
    own = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    merged = {**_FIELDS.get(), **own}
    return {k: v for k, v in merged.items() if k not in _CORE and v is not None}


def _time(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {record.name}: "
        line += report.printable(record.getMessage())
        for key, value in fields_of(record).items():
            text = report.printable(value)
            if not text or any(c in text for c in ' "='):
                text = json.dumps(text)
            line += f" {report.printable(key)}={text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=True)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test's captured stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def setup(log_format: str = "text", level: str = "info") -> Iterator[None]:
    """Log to stderr in ``log_format`` at ``level`` for the block, then put back what was
    there before (a process runs one command; a test runs many in one interpreter)."""
    root = logging.getLogger()
    handler = _Stderr()
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    urllib3 = logging.getLogger("urllib3")
    before = root.level, urllib3.level
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # urllib3 warns about each connection retry; the door (cluster.kube) logs what matters
    urllib3.setLevel(max(logging.ERROR, LEVELS[level]))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0])
        urllib3.setLevel(before[1])
