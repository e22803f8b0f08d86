"""The JavaScript sandbox for sensor expressions (DESIGN §4).

Expressions run in one embedded V8 isolate (mini-racer), shared by all threads under a
lock. The isolate lives in a worker process started on first use: V8 aborts its whole
process on some allocations (splitting a 2^28-character string into characters, for one)
before any memory limit can stop them, and in a worker that costs one evaluation and a
restart rather than the caller's process. The sandbox provides:

* No I/O. Bare V8 has none and no host function is installed; ``console``, the sources of
  work that runs outside an evaluation (``Atomics``, ``SharedArrayBuffer``,
  ``WebAssembly``, ``FinalizationRegistry``, ``WeakRef``) and the binary-buffer classes
  (their memory lives outside the V8 heap, out of the memory limit's sight) are removed.
  The worker's environment holds no secrets: only ``TZ``, ``LANG`` and ``LC_ALL`` pass.
* No state between evaluations. After setup, everything reachable from the global object
  and from the intrinsics it does not lead to (generator, iterator and async prototypes,
  the error ``stack`` accessors) is deep-frozen; the legacy ``RegExp.$1``-style statics,
  which every match updates, are removed; compiled functions are frozen and strict; the
  context is parsed from JSON for every evaluation, so mutating it affects that evaluation
  only. The runtime's entry point is not reachable from JavaScript: only a handle held by
  the worker's Python leads to it.
* A time limit, which also covers promise jobs the expression queued, and a memory limit
  on the isolate's heap. After the memory limit the worker builds a new isolate; a worker
  that a timeout cannot stop, or that dies, is replaced. Compiled expressions are defined
  again in the new isolate on first use.

The worker drives mini-racer's C interface (``init_mini_racer()`` and the ``mr_*``
functions its own Python layer calls) rather than its ``MiniRacer`` class, which sends
every call through an asyncio loop on another thread (about 0.4 ms per call here) and
installs ``setTimeout`` globals. Each evaluation is one call of the runtime's entry
function with the request as its ``this`` string (JSON that V8 never compiles as code),
then a no-op script whose completion shows the promise jobs finished. Written against
mini-racer 0.14.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import queue
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from py_mini_racer import init_mini_racer
from py_mini_racer._dll import MR_CALLBACK

__all__ = [
    "UNDEFINED",
    "EncodedContext",
    "Expression",
    "JSCompileError",
    "JSError",
    "JSLimits",
    "JSMemoryError",
    "JSTimeoutError",
    "UndefinedType",
    "compile_expression",
    "encode_context",
]


class JSError(Exception):
    """An expression failed; ``str(e)`` is a user-facing message (no Python traceback)."""


class JSCompileError(JSError):
    """The source is neither a JavaScript expression nor a function body."""


class JSTimeoutError(JSError):
    """The evaluation ran past its time limit."""


class JSMemoryError(JSError):
    """The evaluation pushed the isolate's heap past its memory limit."""


class UndefinedType:
    """Type of :data:`UNDEFINED`, the value of an expression that evaluates to ``undefined``."""

    _instance: UndefinedType | None = None

    def __new__(cls) -> UndefinedType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __copy__(self) -> UndefinedType:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> UndefinedType:
        return self

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = UndefinedType()

_MIN_MEMORY_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True)
class JSLimits:
    """Limits of one evaluation. The memory limit applies to the whole isolate heap, which
    holds about 1 MB of intrinsics besides the expression's own data; it is checked when V8
    collects garbage, so a single large allocation can exceed it briefly."""

    timeout_s: float = 0.2
    max_memory_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")
        if self.max_memory_bytes < _MIN_MEMORY_BYTES:
            raise ValueError(
                f"max_memory_bytes must be at least {_MIN_MEMORY_BYTES}, "
                f"got {self.max_memory_bytes!r}"
            )


_DEFAULT_LIMITS: Final = JSLimits()
_VARIABLES: Final = ("event", "tasks", "vars", "run")
# Messages end up in Kubernetes status conditions: keep them bounded.
_MAX_MESSAGE_CHARS: Final = 1000
# How long V8 gets to acknowledge a cancellation before the isolate is given up.
_CANCEL_GRACE_S: Final = 1.0
# How long a worker gets to exit, and the process's exit to wait for an evaluation.
_EXIT_WAIT_S: Final = 1.0


def _truncate(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 1] + "…"


def _context_json(context: Mapping[str, Any]) -> bytes:
    data = {name: context.get(name, {}) for name in _VARIABLES}
    try:
        # An order of magnitude faster than the json module on a 25 KB event.
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        # orjson refuses some values that are still JSON (lone surrogates, integers beyond
        # 64 bits, nesting deeper than 254 levels); the json module escapes or writes those.
        try:
            return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("ascii")
        except (TypeError, ValueError) as e:
            raise JSError(_truncate(f"The expression context is not JSON: {e}")) from None


class EncodedContext:
    """A context serialized to JSON once, for evaluating many expressions over it.

    It is a snapshot: changing the mapping afterwards does not change it.
    """

    __slots__ = ("_json",)

    def __init__(self, json_text: bytes) -> None:
        self._json = json_text

    def __repr__(self) -> str:
        return f"<EncodedContext {len(self._json)} bytes>"


def encode_context(context: Mapping[str, Any]) -> EncodedContext:
    """Serialize ``context`` once for reuse across evaluations.

    Expressions see the keys ``event``, ``tasks``, ``vars`` and ``run``; a missing one is
    an empty object and other keys are ignored. NaN and infinities become null, as with
    JavaScript's ``JSON.stringify``. Raises :class:`JSError` if a value is not JSON.
    """
    return EncodedContext(_context_json(context))


_TRAILING_SEMICOLONS: Final = re.compile(r"[\s;]+\Z")
_function_ids = itertools.count(1)


class Expression:
    """A compiled JavaScript expression or function body, reusable across evaluations and
    threads."""

    __slots__ = ("__weakref__", "_body", "_expression", "_id", "limits", "source")

    source: str
    limits: JSLimits

    def __init__(self, source: str, limits: JSLimits) -> None:
        self.source = source
        self.limits = limits
        # `event.x > 1;` is meant as an expression: the semicolon would make it a statement.
        self._expression = _TRAILING_SEMICOLONS.sub("", source)
        self._body = source
        self._id = next(_function_ids)
        weakref.finalize(self, _engine.forget, self._id)

    def __repr__(self) -> str:
        return f"<Expression {self.source!r}>"

    def evaluate(self, context: Mapping[str, Any] | EncodedContext) -> Any:
        """JSON value of the expression (dict/list/str/int/float/bool/None) or UNDEFINED.

        The value goes through ``JSON.stringify``: object keys whose value is ``undefined``
        are left out, NaN and infinities become None, dates become ISO strings. Raises
        :class:`JSError` for an exception, a value that is not JSON, or a limit reached.
        """
        reply = _engine.run(self, context, truthy=False)
        if reply == "u":
            return UNDEFINED
        return json.loads(reply[1:])

    def truthy(self, context: Mapping[str, Any] | EncodedContext) -> bool:
        """JavaScript truthiness of the value ("" 0 NaN null undefined false are falsy;
        [] and {} truthy). The value need not be JSON. Raises :class:`JSError`."""
        return _engine.run(self, context, truthy=True) == "t"


def compile_expression(source: str, limits: JSLimits | None = None) -> Expression:
    """Compile once (raises JSCompileError); the result is reused for every evaluation.

    ``source`` is a JavaScript expression (an object literal such as ``{a: 1}`` is an
    object) or, if it does not parse as one, the body of a function that ``return``s the
    value. It runs in strict mode and sees ``event``, ``tasks``, ``vars`` and ``run``.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a string, not {type(source).__name__}")
    if not source.strip():
        raise JSCompileError("The expression is empty")
    expression = Expression(source, limits or _DEFAULT_LIMITS)
    try:
        _engine.define(expression)
    except JSCompileError:
        raise
    except JSError as e:
        # A source that cannot even be compiled within the limits is rejected like any other.
        raise JSCompileError(str(e)) from None
    return expression


# The runtime, evaluated once per isolate. It returns the entry function, which only Python
# holds. A request is the entry's `this`: a JSON header, a newline, then the payload.
#   ["define", id, expression source or null, body source]  -> undefined
#   ["run", id, truthy, ids of functions to drop], context JSON
#     -> "u" (undefined), "j<JSON>", "t"/"f" (truthy), or "e<message>" (an error)
_RUNTIME_JS: Final = r"""
(function () {
  "use strict";
  const functions = new Map();
  const PARAMS = ["event", "tasks", "vars", "run"];

  function define(id, expression, body) {
    let fn;
    if (expression !== null) {
      try {
        fn = new Function(...PARAMS, '"use strict";return (\n' + expression + "\n);");
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
      }
    }
    // A SyntaxError from here is left uncaught: only then does V8 report its position.
    if (fn === undefined) fn = new Function(...PARAMS, '"use strict";\n' + body);
    Object.freeze(fn.prototype);
    functions.set(id, Object.freeze(fn));
  }

  function describe(e) {
    try {
      if (e instanceof Error) return String(e);
      if (typeof e === "string") return e;
      const text = JSON.stringify(e);
      return text === undefined ? String(e) : text;
    } catch {
      return "An exception was thrown and its message could not be read";
    }
  }

  function pathOf(parent, key, isIndex) {
    if (isIndex) return parent + "[" + key + "]";
    if (/^[A-Za-z_$][\w$]*$/.test(key)) return parent + "." + key;
    return parent + "[" + JSON.stringify(key) + "]";
  }

  function encode(value) {
    if (value === undefined) return "u";
    const paths = new WeakMap();
    let bad = null;
    function replacer(key, v) {
      const parent = paths.get(this);
      const path = parent === undefined ? "result" : pathOf(parent, key, Array.isArray(this));
      let kind = null;
      switch (typeof v) {
        case "function": kind = "a function"; break;
        case "symbol": kind = "a symbol"; break;
        case "bigint": kind = "a BigInt"; break;
        case "object":
          if (v === null) break;
          if (v instanceof Promise) kind = "a Promise (asynchronous code is not supported)";
          else if (v instanceof Map || v instanceof WeakMap) kind = "a Map";
          else if (v instanceof Set || v instanceof WeakSet) kind = "a Set";
          else paths.set(v, path);
      }
      if (kind !== null) {
        bad = path + " is " + kind;
        throw bad;
      }
      return v;
    }
    let text;
    try {
      text = JSON.stringify(value, replacer);
    } catch (e) {
      if (bad !== null) return "eThe result is not JSON: " + bad;
      if (e instanceof TypeError && String(e.message).startsWith("Converting circular")) {
        return "eThe result is not JSON: it contains a circular reference";
      }
      return "e" + describe(e);
    }
    return text === undefined ? "u" : "j" + text;
  }

  function run(id, truthy, text) {
    let value;
    try {
      const c = JSON.parse(text);
      value = functions.get(id)(c.event, c.tasks, c.vars, c.run);
    } catch (e) {
      return "e" + describe(e);
    }
    if (truthy) return value ? "t" : "f";
    return encode(value);
  }

  function entry() {
    const newline = this.indexOf("\n");
    const request = JSON.parse(this.slice(0, newline));
    if (request[0] === "define") return define(request[1], request[2], request[3]);
    for (const id of request[3]) functions.delete(id);
    return run(request[1], request[2], this.slice(newline + 1));
  }

  const removed = [
    "console", "Atomics", "SharedArrayBuffer", "WebAssembly", "FinalizationRegistry", "WeakRef",
    "ArrayBuffer", "DataView", "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array",
    "Uint16Array", "Int32Array", "Uint32Array", "Float16Array", "Float32Array",
    "Float64Array", "BigInt64Array", "BigUint64Array",
  ];
  for (const name of removed) delete globalThis[name];
  const regexpStatics = [
    "input", "$_", "lastMatch", "$&", "lastParen", "$+", "leftContext", "$`",
    "rightContext", "$'", "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9",
  ];
  for (const name of regexpStatics) delete RegExp[name];

  // Objects that lead to intrinsics globalThis does not: generator, async and iterator
  // prototypes, and the `stack` accessor functions every error instance shares.
  const captured = {};
  Error.captureStackTrace(captured);
  const samples = [
    new Error(), captured,
    function* () {}, (function* () {})(), async function () {}, async () => {},
    async function* () {}, (async function* () {})(),
    [][Symbol.iterator](), ""[Symbol.iterator](), new Map().entries(), new Set().values(),
    /x/[Symbol.matchAll](""), [].values().map((x) => x),
    Iterator.from({ next() { return { done: true }; } }),
    new Intl.Segmenter().segment(""), new Intl.Segmenter().segment("")[Symbol.iterator](),
  ];
  const seen = new Set();
  const pending = [globalThis, ...samples];
  while (pending.length > 0) {
    const o = pending.pop();
    if ((typeof o !== "object" && typeof o !== "function") || o === null || seen.has(o)) continue;
    seen.add(o);
    Object.freeze(o);
    pending.push(Object.getPrototypeOf(o));
    const descriptors = Object.getOwnPropertyDescriptors(o);
    for (const key of Reflect.ownKeys(descriptors)) {
      const d = descriptors[key];
      pending.push(d.value, d.get, d.set);
    }
  }
  return entry;
})()
"""

# mini-racer reports an uncaught exception as "<script>:<line>: <Name>: <message>", then
# the source line and carets under the error.
_UNCAUGHT: Final = re.compile(r"[^\n]*?:(\d+): ([^\n]*)(?:\n[^\n]*\n( *)\^)?")
# new Function(params, body) compiles "(function anonymous(params\n) {\n" + body + "\n})"
# and the body starts with our '"use strict";' line: the source's line 1 is line 4.
_SOURCE_FIRST_LINE: Final = 4


def _compile_error(message: str, source: str) -> JSCompileError:
    match = _UNCAUGHT.match(message)
    if match is None:
        return JSCompileError(_truncate(message.strip().split("\n", 1)[0]))
    line = int(match.group(1)) - _SOURCE_FIRST_LINE + 1
    if line > len(source.splitlines()):
        # V8 tripped over the end of our wrapper (a "}" or ")" the user never wrote).
        return JSCompileError("SyntaxError: Unexpected end of input")
    position = f"line {line}"
    if match.group(3) is not None:
        position += f", column {len(match.group(3)) + 1}"
    return JSCompileError(_truncate(f"{match.group(2)} ({position})"))


# Value types of mini-racer's C interface (src/v8_py_frontend/value.h).
_T_BOOL: Final = 2
_T_INTEGER: Final = 3
_T_DOUBLE: Final = 4
_T_STRING: Final = 5
_T_UNDEFINED: Final = 11
_T_FUNCTION: Final = 100
_T_ARRAY: Final = 6
_T_EXECUTE_EXCEPTION: Final = 200
_T_OOM_EXCEPTION: Final = 202
_TEXT_TYPES: Final = frozenset({_T_STRING, *range(200, 207)})  # strings and exceptions
_HANDLE_TYPES: Final = frozenset({_T_FUNCTION, _T_ARRAY})


class _Stuck(Exception):
    """V8 did not stop when told to: the isolate must be given up."""


class _Isolate:
    """One V8 isolate with the runtime installed, driven through mini-racer's C interface.
    Used inside the worker process."""

    def __init__(self) -> None:
        self._dll = init_mini_racer(ignore_duplicate_init=True)
        self._replies: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        # Called on V8's thread; must stay referenced for as long as the context exists.
        self._callback = MR_CALLBACK(self._on_reply)
        self._context: int = self._dll.mr_init_context(self._callback)
        self._callback_ids = itertools.count(1)
        self._memory_limit = 0
        try:
            self._entry = self._handle(_RUNTIME_JS, _T_FUNCTION)
            # Arguments of every entry call: none, the request travels as `this`.
            self._no_arguments = self._handle("[]", _T_ARRAY)
        except BaseException:
            self.close()
            raise

    def _on_reply(self, callback_id: int, raw: Any) -> None:
        self._replies.put((callback_id, raw))

    def _string(self, text: bytes) -> Any:
        return self._dll.mr_alloc_string_val(self._context, text, len(text), _T_STRING)

    def _handle(self, script: str, kind: int) -> Any:
        """Evaluate a setup script and keep its value's handle (freed with the context)."""
        code = self._string(script.encode())
        ((reply_kind, value),) = self._run(
            [lambda callback_id: self._dll.mr_eval(self._context, code, callback_id)], 10.0
        )
        self._free(code)
        if reply_kind != kind:
            raise RuntimeError(f"JavaScript sandbox setup failed: {value}")
        return value

    def call(self, request: bytes, timeout: float) -> tuple[int, Any]:
        """Call the entry with ``request`` as ``this``; return the reply's (type, value).

        A no-op script is queued behind the call. V8 runs the promise jobs the call left
        before it starts the next task, so the no-op's reply shows they finished in time.
        Raises JSTimeoutError past the deadline, _Stuck if V8 then did not stop.
        """
        this = self._string(request)
        fence = self._string(b"0")
        try:
            replies = self._run(
                [
                    lambda callback_id: self._dll.mr_call_function(
                        self._context, self._entry, this, self._no_arguments, callback_id
                    ),
                    lambda callback_id: self._dll.mr_eval(self._context, fence, callback_id),
                ],
                timeout,
            )
        except _Stuck:
            raise  # V8 may still read the strings: they go with the context
        except BaseException:
            self._free(this, fence)
            raise
        self._free(this, fence)
        return replies[0]

    def _free(self, *handles: Any) -> None:
        for handle in handles:
            self._dll.mr_free_value(self._context, handle)

    def _run(self, starts: list[Callable[[int], int]], timeout: float) -> list[tuple[int, Any]]:
        pending: dict[int, int] = {}
        tasks: list[int] = []
        for index, start in enumerate(starts):
            callback_id = next(self._callback_ids)
            pending[callback_id] = index
            tasks.append(start(callback_id))
        replies: list[tuple[int, Any]] = [(_T_UNDEFINED, None)] * len(starts)
        try:
            self._collect(pending, replies, time.monotonic() + timeout)
        except queue.Empty:
            if 0 not in pending.values():
                # The call returned: what overran is its promise jobs, which run between
                # tasks, where cancelling a task cannot reach them.
                raise _Stuck from None
            for task in tasks:
                # Interrupts the task if it is running, skips it if it has not started.
                self._dll.mr_cancel_task(self._context, task)
            try:
                self._collect(pending, replies, time.monotonic() + _CANCEL_GRACE_S)
            except queue.Empty:
                raise _Stuck from None
            raise JSTimeoutError(f"The expression ran longer than {timeout:g} s") from None
        return replies

    def _collect(
        self, pending: dict[int, int], replies: list[tuple[int, Any]], deadline: float
    ) -> None:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise queue.Empty
            callback_id, raw = self._replies.get(timeout=remaining)
            replies[pending.pop(callback_id)] = self._read(raw)

    def _read(self, raw: Any) -> tuple[int, Any]:
        contents = raw.contents
        kind: int = contents.type
        if kind in _HANDLE_TYPES:
            return kind, raw
        value: Any = None
        if kind in _TEXT_TYPES:
            data = ctypes.string_at(contents.value.value_ptr, contents.len)
            value = data.decode("utf-8", "replace")
        elif kind == _T_BOOL:
            value = contents.value.int_val == 1
        elif kind == _T_INTEGER:
            value = int(contents.value.int_val)
        elif kind == _T_DOUBLE:
            value = float(contents.value.double_val)
        self._dll.mr_free_value(self._context, raw)
        return kind, value

    def set_memory_limit(self, limit: int) -> None:
        if limit != self._memory_limit:
            self._dll.mr_set_hard_memory_limit(self._context, limit)
            self._memory_limit = limit

    def memory_limit_reached(self) -> bool:
        return bool(self._dll.mr_hard_memory_limit_reached(self._context))

    def close(self) -> None:
        """Stop any JavaScript still running and free the isolate."""
        self._dll.mr_free_context(self._context)


# Worker protocol. The parent sends (timeout_s, max_memory_bytes, length) and the request,
# the worker answers (status, value type, length) and the value's text.
_REQUEST: Final = struct.Struct("!dQI")
_REPLY: Final = struct.Struct("!BBI")
_READY: Final = b"R"
_OK: Final = 0
_TIMEOUT: Final = 1
_MEMORY: Final = 2
_STUCK: Final = 3
# Worker start-up (Python, mini-racer and the runtime) on a slow machine.
_START_TIMEOUT_S: Final = 60.0
# Beyond its own deadline and cancellation grace, how long the worker gets to answer before
# it is killed (it may be building a new isolate first).
_WORKER_MARGIN_S: Final = 5.0
# The worker sees no secrets: only what shapes dates and text.
_WORKER_ENVIRONMENT: Final = ("TZ", "LANG", "LC_ALL")


def _serve() -> None:
    """Worker process main loop: requests from stdin, replies on stdout, one isolate."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout must not corrupt the replies
    isolate: _Isolate | None = _Isolate()
    replies.write(_READY)
    replies.flush()
    while True:
        head = requests.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return  # the parent closed the pipe
        timeout, max_memory, length = _REQUEST.unpack(head)
        request = requests.read(length)
        if isolate is None:
            isolate = _Isolate()
        status, kind, value = _serve_one(isolate, request, timeout, max_memory)
        data = value.encode() if isinstance(value, str) else b""
        replies.write(_REPLY.pack(status, kind, len(data)) + data)
        replies.flush()
        if status == _MEMORY:
            isolate.close()
            isolate = None


def _serve_one(
    isolate: _Isolate, request: bytes, timeout: float, max_memory: int
) -> tuple[int, int, Any]:
    isolate.set_memory_limit(max_memory)
    try:
        kind, value = isolate.call(request, timeout)
    except JSTimeoutError:
        return _TIMEOUT, 0, None
    except _Stuck:
        return _STUCK, 0, None
    # Also catches memory exhausted by promise jobs, after the call itself returned.
    if kind == _T_OOM_EXCEPTION or isolate.memory_limit_reached():
        return _MEMORY, 0, None
    return _OK, kind, value


class _Overdue(Exception):
    """The worker did not answer in time."""


class _Lost(Exception):
    """The worker process ended; ``error`` says why, for the user."""

    def __init__(self, error: JSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Worker:
    """The worker process that holds the isolate, seen from the parent.

    V8 aborts the whole process on some allocations (a string of 2^28 characters split into
    characters, huge sparse arrays, ...) before any memory limit can stop it. In a worker,
    such an expression costs one evaluation and a new worker instead of the process.
    """

    def __init__(self) -> None:
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        bootstrap = (
            f"import sys; sys.path.insert(0, {package_root!r}); import hiphops.js as m; m._serve()"
        )
        # Lives as long as the worker: V8 explains fatal errors there.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.parent_pid = os.getpid()
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", bootstrap],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
            env={name: os.environ[name] for name in _WORKER_ENVIRONMENT if name in os.environ},
        )
        try:
            self._receive(time.monotonic() + _START_TIMEOUT_S, len(_READY))
        except (_Lost, _Overdue) as e:
            self.kill()
            detail = e.error if isinstance(e, _Lost) else "no answer"
            raise JSError(f"The JavaScript engine did not start: {detail}") from None

    def call(self, request: bytes, limits: JSLimits) -> tuple[int, int, str]:
        """Send one request; return (status, value type, value text).

        Raises _Overdue if the worker does not answer in time, _Lost if it died.
        """
        # One write: the worker then wakes once, with the whole request there to read.
        self._send(_REQUEST.pack(limits.timeout_s, limits.max_memory_bytes, len(request)) + request)
        deadline = time.monotonic() + limits.timeout_s + _CANCEL_GRACE_S + _WORKER_MARGIN_S
        status, kind, length = _REPLY.unpack(self._receive(deadline, _REPLY.size))
        return status, kind, self._receive(deadline, length).decode()

    def _send(self, data: bytes) -> None:
        pipe = self._process.stdin
        assert pipe is not None
        view = memoryview(data)
        try:
            while view:
                view = view[pipe.write(view) or 0 :]
        except BrokenPipeError:
            raise self._lost() from None

    def _receive(self, deadline: float, size: int) -> bytes:
        pipe = self._process.stdout
        assert pipe is not None
        data = b""
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                raise _Overdue
            chunk = os.read(pipe.fileno(), size - len(data))
            if not chunk:
                raise self._lost()
            data += chunk
        return data

    def _lost(self) -> _Lost:
        try:
            code = self._process.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._stderr.seek(0)
        lines = [
            line.strip("# ").strip()
            for line in self._stderr.read().decode("utf-8", "replace").splitlines()
            if line.strip("# ").strip()
        ]
        # V8 reports fatal errors as "# Fatal ..." lines, followed by a C stack trace.
        fatal = [line for line in lines if line.startswith("Fatal")]
        detail = fatal[-1] if fatal else lines[-1] if lines else f"exit status {code}"
        if "out of memory" in detail or "invalid size" in detail:
            message = f"The expression exhausted the JavaScript engine's memory ({detail})"
            return _Lost(JSMemoryError(_truncate(message)))
        return _Lost(JSError(_truncate(f"The JavaScript engine stopped ({detail})")))

    def kill(self) -> None:
        """End the worker now."""
        self._process.kill()
        self._process.wait()
        self._close_pipes()

    def close(self) -> None:
        """Let the worker exit (end of its input); kill it if it does not."""
        try:
            self._close_pipes()
            self._process.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()


class _Engine:
    """The parent's side: one worker, started lazily, replaced when it dies or hangs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        # Expressions defined in the worker's current isolate.
        self._defined: set[int] = set()
        # Finalizers may run in any thread at any time, even in this one while it holds the
        # lock, so they only append; the next evaluation drops the functions in V8.
        self._dead: deque[int] = deque()

    def forget(self, function_id: int) -> None:
        """Schedule a garbage-collected Expression's function for removal from V8."""
        self._dead.append(function_id)

    def define(self, expression: Expression) -> None:
        """Compile ``expression`` in the worker's isolate."""
        with self._lock:
            self._leave_parents_worker()
            self._define(expression)

    def run(
        self, expression: Expression, context: Mapping[str, Any] | EncodedContext, *, truthy: bool
    ) -> str:
        """Evaluate; return the runtime's reply: "u", "j<JSON>", or "t"/"f" if ``truthy``."""
        if isinstance(context, EncodedContext):
            context_json = context._json
        else:
            context_json = _context_json(context)
        with self._lock:
            self._leave_parents_worker()
            if expression._id not in self._defined:
                self._define(expression)
            dead: list[int] = []
            while self._dead:
                function_id = self._dead.popleft()
                if function_id in self._defined:
                    self._defined.discard(function_id)
                    dead.append(function_id)
            header = json.dumps(["run", expression._id, truthy, dead]).encode()
            kind, reply = self._call(expression.limits, header + b"\n" + context_json)
        if kind != _T_STRING:
            raise JSError(_truncate(f"JavaScript sandbox failure: {reply}"))
        if reply.startswith("e"):
            raise JSError(_truncate(reply[1:]))
        return reply

    def shutdown(self) -> None:
        """Stop the worker at interpreter exit."""
        if self._lock.acquire(timeout=_EXIT_WAIT_S):
            try:
                if self._worker is not None:
                    self._worker.close()
                    self._worker = None
            finally:
                self._lock.release()

    def _call(self, limits: JSLimits, request: bytes) -> tuple[int, str]:
        if self._worker is None:
            self._worker = _Worker()
            self._defined.clear()
        try:
            status, kind, value = self._worker.call(request, limits)
        except _Lost as e:
            self._drop()
            raise e.error from None
        except BaseException:
            # Overdue, or interrupted mid-request: its answer could still come, so the
            # worker cannot be trusted with the next one.
            self._drop()
            raise JSTimeoutError(f"The expression ran longer than {limits.timeout_s:g} s") from None
        if status == _STUCK:
            # The isolate could not be interrupted: only ending the process stops it.
            self._drop()
        if status in (_TIMEOUT, _STUCK):
            raise JSTimeoutError(f"The expression ran longer than {limits.timeout_s:g} s")
        if status == _MEMORY:
            self._defined.clear()  # the worker builds a new isolate
            mib = limits.max_memory_bytes / (1024 * 1024)
            raise JSMemoryError(f"The expression used more than {mib:g} MiB of memory")
        return kind, value

    def _leave_parents_worker(self) -> None:
        if self._worker is not None and self._worker.parent_pid != os.getpid():
            # A forked child shares its parent's pipes: it needs a worker of its own.
            self._worker = None
            self._defined.clear()

    def _drop(self) -> None:
        worker, self._worker = self._worker, None
        self._defined.clear()
        if worker is not None:
            worker.kill()

    def _define(self, expression: Expression) -> None:
        header = ["define", expression._id, expression._expression, expression._body]
        kind, reply = self._call(expression.limits, json.dumps(header).encode() + b"\n")
        if kind == _T_EXECUTE_EXCEPTION:
            raise _compile_error(reply, expression.source)
        if kind != _T_UNDEFINED:
            raise JSError(_truncate(f"JavaScript sandbox failure: {reply}"))
        self._defined.add(expression._id)


_engine: Final = _Engine()
atexit.register(_engine.shutdown)
