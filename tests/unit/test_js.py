"""The JavaScript sandbox: hiphops.js against a real V8 isolate (mini-racer)."""

from __future__ import annotations

import copy
import gc
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hiphops import js
from hiphops.js import (
    UNDEFINED,
    JSCompileError,
    JSError,
    JSLimits,
    JSMemoryError,
    JSTimeoutError,
    compile_expression,
    encode_context,
)

EVENT: dict[str, Any] = {
    "action": "opened",
    "pull_request": {
        "number": 7,
        "additions": 120,
        "base": {"ref": "main"},
        "labels": [{"name": "bug"}, {"name": "ui"}],
    },
}
CONTEXT: dict[str, Any] = {
    "event": EVENT,
    "tasks": {"build": {"state": "COMPLETE", "result": {"image": "app:1"}}},
    "vars": {"env": "prod"},
    "run": {"name": "run-1", "sensor": "review"},
}
# Generous, so that a slow machine never turns a memory or cancellation test into a timeout.
SLOW = JSLimits(timeout_s=10)


def evaluate(source: str, context: dict[str, Any] | None = None) -> Any:
    return compile_expression(source).evaluate(CONTEXT if context is None else context)


# --- source forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.pull_request.additions > 100", True),
        ("event.pull_request.base.ref === 'main' && event.pull_request.additions < 500", True),
        ("event.pull_request.labels.map(l => l.name)", ["bug", "ui"]),
        ("tasks.build.result.image + '@' + vars.env + '/' + run.name", "app:1@prod/run-1"),
        ("{a: 1, b: [true, null, 'x']}", {"a": 1, "b": [True, None, "x"]}),
        ("{}", {}),
        ("1.5 * 2", 3),
        ("0.1 + 0.2", 0.30000000000000004),
        ("event.pull_request.additions > 100;", True),
        ("event.action // a trailing comment", "opened"),
        ("`#${event.pull_request.number}`", "#7"),
        ("new Date(0)", "1970-01-01T00:00:00.000Z"),
        ("[1, undefined, () => 1].length", 3),
    ],
)
def test_expression_values(source: str, expected: Any) -> None:
    assert evaluate(source) == expected


def test_function_body_with_statements_and_return() -> None:
    source = """
const labels = event.pull_request.labels.map(l => l.name);
if (labels.includes('bug')) {
  return {priority: 'high', count: labels.length};
}
return {priority: 'low'};
"""
    assert evaluate(source) == {"priority": "high", "count": 2}


def test_function_body_without_return_is_undefined() -> None:
    assert evaluate("const x = 1;\nlet y = x + 1;") is UNDEFINED


def test_source_is_kept() -> None:
    source = "event.action"
    assert compile_expression(source).source == source


# --- truthiness and undefined -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('""', False),
        ("0", False),
        ("-0", False),
        ("NaN", False),
        ("null", False),
        ("undefined", False),
        ("false", False),
        ("event.missing", False),
        ("[]", True),
        ("{}", True),
        ('"0"', True),
        ('"false"', True),
        ("-1", True),
        ("Infinity", True),
        ("() => 0", True),
        ("Symbol()", True),
        ("0n", False),
        ("1n", True),
    ],
)
def test_truthiness(source: str, expected: bool) -> None:
    assert compile_expression(source).truthy(CONTEXT) is expected


def test_undefined_results() -> None:
    assert evaluate("event.missing") is UNDEFINED
    assert evaluate("undefined") is UNDEFINED
    assert evaluate("void 0") is UNDEFINED
    assert evaluate("({toJSON() { return undefined; }})") is UNDEFINED
    # JSON.stringify rules inside values: keys dropped, array slots null.
    assert evaluate("{a: undefined, b: [undefined], c: 1}") == {"b": [None], "c": 1}


def test_undefined_sentinel() -> None:
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert copy.deepcopy({"x": UNDEFINED})["x"] is UNDEFINED
    assert type(UNDEFINED)() is UNDEFINED


def test_missing_context_keys_are_empty_objects() -> None:
    assert evaluate("[event, tasks, vars, run]", {}) == [{}, {}, {}, {}]
    assert evaluate("tasks.build === undefined", {"event": EVENT}) is True


def test_nan_and_infinity_become_null() -> None:
    assert evaluate("[0 / 0, 1 / 0]") == [None, None]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "position"),
    [
        ("event.(", "(line 1, column 7)"),
        ("const a = 1;\nreturn a..b", "(line 2, column 10)"),
        ("{a: 1 b: 2}", "(line 1, column 7)"),
    ],
)
def test_compile_error_at_compile_time_with_position(source: str, position: str) -> None:
    with pytest.raises(JSCompileError) as caught:
        compile_expression(source)
    message = str(caught.value)
    assert message.startswith("SyntaxError: ")
    assert message.endswith(position)


def test_compile_error_at_end_of_source() -> None:
    with pytest.raises(JSCompileError, match=r"^SyntaxError: Unexpected end of input$"):
        compile_expression("event.a +")


def test_empty_source_is_a_compile_error() -> None:
    with pytest.raises(JSCompileError, match="empty"):
        compile_expression("  \n ")


def test_compile_error_is_a_js_error() -> None:
    assert issubclass(JSCompileError, JSError)
    assert issubclass(JSTimeoutError, JSError)
    assert issubclass(JSMemoryError, JSError)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x", "ReferenceError: x is not defined"),
        ("event.foo.bar", "TypeError: Cannot read properties of undefined (reading 'bar')"),
        ("null.x", "TypeError: Cannot read properties of null (reading 'x')"),
        ("throw new Error('no deploys on Friday')", "Error: no deploys on Friday"),
        ("throw 'boom'", "boom"),
        ("throw {code: 42}", '{"code":42}'),
        ("(function f() { return f(); })()", "RangeError: Maximum call stack size exceeded"),
    ],
)
def test_runtime_error_carries_the_javascript_message(source: str, message: str) -> None:
    expression = compile_expression(source)
    with pytest.raises(JSError) as caught:
        expression.evaluate(CONTEXT)
    assert str(caught.value) == message
    # truthy() evaluates the same way.
    with pytest.raises(JSError, match="^" + re.escape(message)):
        expression.truthy(CONTEXT)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("() => 1", "result is a function"),
        ("Symbol('s')", "result is a symbol"),
        ("10n", "result is a BigInt"),
        ("{a: {b: [1, Math.max]}}", "result.a.b[1] is a function"),
        ("{'x-y': Symbol()}", 'result["x-y"] is a symbol'),
        ("{n: 1n}", "result.n is a BigInt"),
        ("new Map([[1, 2]])", "result is a Map"),
        ("{s: new Set()}", "result.s is a Set"),
        ("Promise.resolve(1)", "result is a Promise"),
        ("(async () => 1)()", "result is a Promise"),
        ("(() => { const a = {}; a.self = a; return a; })()", "it contains a circular reference"),
    ],
)
def test_non_json_results_are_errors(source: str, message: str) -> None:
    with pytest.raises(JSError) as caught:
        evaluate(source)
    assert str(caught.value).startswith("The result is not JSON: ")
    assert message in str(caught.value)


def test_error_messages_are_bounded() -> None:
    with pytest.raises(JSError) as caught:
        evaluate("throw 'x'.repeat(100000)")
    assert len(str(caught.value)) <= 1000


def test_context_that_is_not_json() -> None:
    with pytest.raises(JSError, match="not JSON"):
        evaluate("1", {"event": {"when": object()}})
    with pytest.raises(JSError, match="not JSON"):
        encode_context({"event": {"when": object()}})


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        JSLimits(timeout_s=0)
    with pytest.raises(ValueError):
        JSLimits(max_memory_bytes=1024)


# --- limits -------------------------------------------------------------------------------


def test_infinite_loop_times_out_and_the_next_evaluation_works() -> None:
    loop = compile_expression("while (true) {}", JSLimits(timeout_s=0.1))
    with pytest.raises(JSTimeoutError, match=r"longer than 0\.1 s"):
        loop.evaluate(CONTEXT)
    with pytest.raises(JSTimeoutError):
        loop.truthy(CONTEXT)
    assert evaluate("event.action") == "opened"


@pytest.mark.parametrize(
    "source",
    [
        "Promise.resolve().then(() => { while (true) {} }); return 1",
        "(async () => { await null; for (;;); })(); return 1",
    ],
)
def test_promise_jobs_are_under_the_time_limit(source: str) -> None:
    # These run after the function has returned, where cancelling the call cannot reach:
    # the isolate is given up and a new one serves the next evaluation.
    compiled_before = compile_expression("event.pull_request.number")
    with pytest.raises(JSTimeoutError):
        compile_expression(source, JSLimits(timeout_s=0.1)).evaluate(CONTEXT)
    assert compiled_before.evaluate(CONTEXT) == 7


def test_promise_jobs_that_finish_do_not_change_the_result() -> None:
    source = "let x = 1; Promise.resolve().then(() => { x = 2; }); return x"
    assert evaluate(source) == 1


def test_memory_bomb_fails_and_the_isolate_is_rebuilt() -> None:
    compiled_before = compile_expression("event.pull_request.labels.length")
    encoded = encode_context(CONTEXT)
    assert compiled_before.evaluate(encoded) == 2
    bomb = compile_expression("let a = []; while (true) a.push(new Array(1e6).fill(1))", SLOW)
    with pytest.raises(JSMemoryError, match="more than 64 MiB"):
        bomb.evaluate(encoded)
    assert compile_expression("1 + 1").evaluate({}) == 2
    # Expressions compiled in the old isolate are defined again in the new one.
    assert compiled_before.evaluate(encoded) == 2
    with pytest.raises(JSMemoryError):
        bomb.truthy(encoded)
    assert compiled_before.truthy(encoded) is True


def test_allocation_that_aborts_v8_does_not_take_the_process_down() -> None:
    # V8 aborts its process here ("Fatal JavaScript invalid size error"), whatever the limit.
    source = "let s = 'xy'; for (let i = 0; i < 27; i++) s += s; return s.split('').length"
    compiled_before = compile_expression("event.action")
    with pytest.raises(JSMemoryError, match="exhausted the JavaScript engine's memory"):
        compile_expression(source, SLOW).evaluate({})
    assert compiled_before.evaluate(CONTEXT) == "opened"


def test_work_that_cannot_be_interrupted_is_stopped() -> None:
    # Filling a huge sparse array is one native loop that ignores V8's termination request.
    source = "return new Array(2 ** 30).fill(0).length"
    with pytest.raises((JSTimeoutError, JSMemoryError)):
        compile_expression(source, JSLimits(timeout_s=0.1)).evaluate({})
    assert evaluate("run.name") == "run-1"


def test_memory_limit_of_promise_jobs() -> None:
    source = (
        "Promise.resolve().then(() => { const a = []; for (;;) a.push(new Array(1e5).fill(1)) });"
        "return 1"
    )
    limits = JSLimits(timeout_s=10, max_memory_bytes=32 * 1024 * 1024)
    with pytest.raises(JSMemoryError, match="more than 32 MiB"):
        compile_expression(source, limits).evaluate({})
    assert evaluate("vars.env") == "prod"


# --- isolation ----------------------------------------------------------------------------


GENERATOR_PROTOTYPE = "Object.getPrototypeOf(function* () {})"
ITERATOR_PROTOTYPE = "Object.getPrototypeOf([].values())"
STACK_GETTER = "Object.getOwnPropertyDescriptor(new Error(), 'stack').get"


@pytest.mark.parametrize(
    ("write", "read", "expected"),
    [
        ("globalThis.leak = 1", "typeof leak", "undefined"),
        ("Function('leak = 1; return 1')()", "typeof leak", "undefined"),  # sloppy mode
        ("(0, eval)('var leak = 1')", "typeof leak", "undefined"),
        ("Array.prototype.leak = 1", "typeof [].leak", "undefined"),
        ("Object.prototype.leak = 1", "typeof ({}).leak", "undefined"),
        ("Object.prototype.toString = () => 'leak'", "String({})", "[object Object]"),
        ("JSON.parse = () => 'leak'", "JSON.parse('1')", 1),
        ("Math.leak = 1", "typeof Math.leak", "undefined"),
        ("Error.stackTraceLimit = 0", "Error.stackTraceLimit > 0", True),
        (f"{GENERATOR_PROTOTYPE}.leak = 1", f"typeof {GENERATOR_PROTOTYPE}.leak", "undefined"),
        (f"{ITERATOR_PROTOTYPE}.leak = 1", f"typeof {ITERATOR_PROTOTYPE}.leak", "undefined"),
        (f"{STACK_GETTER}.leak = 1", f"typeof {STACK_GETTER}.leak", "undefined"),
        ("/(le)ak/.exec('leak'); return RegExp.$1", "typeof RegExp.$1", "undefined"),
    ],
)
def test_no_state_between_evaluations(write: str, read: str, expected: Any) -> None:
    try:
        evaluate(write)
    except JSError as e:
        # Strict mode reports writes to frozen objects.
        assert str(e).startswith("TypeError: ")
    assert evaluate(read) == expected
    assert compile_expression(read).evaluate(encode_context(CONTEXT)) == expected


def test_mutating_the_context_stays_within_the_evaluation() -> None:
    encoded = encode_context(CONTEXT)
    mutate = compile_expression(
        "event.pull_request.labels.push({name: 'x'}); event.action = 'closed'; "
        "vars.env = 'dev'; delete tasks.build; return event.pull_request.labels.length"
    )
    read = compile_expression("[event.action, event.pull_request.labels.length, vars.env, tasks]")
    expected = ["opened", 2, "prod", CONTEXT["tasks"]]
    for context in (encoded, CONTEXT):
        assert mutate.evaluate(context) == 3
        assert mutate.evaluate(context) == 3
        assert read.evaluate(context) == expected
    assert CONTEXT["event"]["action"] == "opened"


def test_every_shared_object_is_frozen() -> None:
    # Walks everything reachable from the global object and the intrinsics it does not
    # lead to; anything not frozen could carry state from one evaluation to the next.
    walk = compile_expression(
        r"""
const P = Object.getPrototypeOf;
const stack = (o) => Object.getOwnPropertyDescriptor(o, "stack");
const captured = {};
Error.captureStackTrace(captured);
const roots = [globalThis, P(function* () {}), P(P((function* () {})())), P(async () => {}),
  P(async function* () {}), P(P((async function* () {})())), P([][Symbol.iterator]()),
  P(""[Symbol.iterator]()), P(new Map().entries()), P(new Set().values()),
  P(/x/[Symbol.matchAll]("")), P([].values().map((x) => x)),
  P(Iterator.from({ next() { return { done: true }; } })), P(new Intl.Segmenter().segment("")),
  P(new Intl.Segmenter().segment("")[Symbol.iterator]()), stack(new Error()).get,
  stack(new Error()).set, stack(captured).get, P(arguments)];
const seen = new Set();
const todo = roots.map((o, i) => [o, "root" + i]);
const notFrozen = [];
while (todo.length > 0) {
  const [o, path] = todo.pop();
  if ((typeof o !== "object" && typeof o !== "function") || o === null || seen.has(o)) continue;
  seen.add(o);
  if (!Object.isFrozen(o)) notFrozen.push(path);
  todo.push([P(o), path + ".__proto__"]);
  const descriptors = Object.getOwnPropertyDescriptors(o);
  for (const key of Reflect.ownKeys(descriptors)) {
    const d = descriptors[key];
    const name = path + "." + String(key);
    todo.push([d.value, name], [d.get, name + "/get"], [d.set, name + "/set"]);
  }
}
return {checked: seen.size, notFrozen};
"""
    )
    result = walk.evaluate({})
    assert result["notFrozen"] == []
    assert result["checked"] > 500


def test_no_host_functions_or_out_of_band_work() -> None:
    names = [
        "console", "print", "setTimeout", "setInterval", "clearTimeout", "queueMicrotask",
        "fetch", "require", "process", "WebAssembly", "Atomics", "SharedArrayBuffer",
        "ArrayBuffer", "Uint8Array", "DataView", "FinalizationRegistry", "WeakRef",
        "__timer_manager", "__TimerManager",
    ]  # fmt: skip
    source = "[" + ", ".join(f"typeof {name}" for name in names) + "]"
    assert evaluate(source) == ["undefined"] * len(names)


def test_compiled_function_cannot_be_reached_or_changed() -> None:
    with pytest.raises(JSError, match="TypeError"):
        evaluate("arguments.callee.leak = 1")
    assert evaluate("Function('return arguments.callee.caller')()") is None


# --- EncodedContext and threads -----------------------------------------------------------

TRICKY: dict[str, Any] = {
    "event": {
        "text": "back`tick ${not.a.template} \\ \\` \"quoted\" 'single'\n\t\u2028\u2029",
        "unicode": "héllo wörld ✓ 🚀 \u0000",
        "lone_surrogate": "\ud800",
        "big": 2**70,
        "deep": {"a": [[[[{"b": None}]]]]},
        "numbers": [0, -1, 1.5, 1e300, 2**53],
        "empty": {"list": [], "obj": {}, "str": ""},
        3: "int key",
    },
    "tasks": {"t": {"result": [True, False, None]}},
    "vars": {},
    "run": {"name": "r"},
}


@pytest.mark.parametrize(
    "source",
    [
        "event",
        "[event.text, event.unicode, event.lone_surrogate]",
        "event.text.includes('${not.a.template}') && event.text.includes('`')",
        "event.unicode.length",
        "[event.big, event.numbers]",
        "event['3']",
        "Object.keys(event).sort()",
        "[tasks, vars, run]",
    ],
)
def test_encoded_context_is_equivalent_to_a_dict(source: str) -> None:
    expression = compile_expression(source)
    from_dict = expression.evaluate(TRICKY)
    encoded = encode_context(TRICKY)
    assert expression.evaluate(encoded) == from_dict
    assert expression.evaluate(encoded) == from_dict
    assert expression.truthy(encoded) is expression.truthy(TRICKY)


def test_values_round_trip() -> None:
    expected = dict(TRICKY["event"])
    expected["3"] = expected.pop(3)
    expected["big"] = float(2**70)
    assert evaluate("event", TRICKY) == expected


def test_encoded_context_is_a_snapshot() -> None:
    context = {"event": {"n": 1}}
    encoded = encode_context(context)
    context["event"]["n"] = 2
    assert evaluate("event.n", context) == 2
    assert compile_expression("event.n").evaluate(encoded) == 1


def test_concurrent_evaluations_from_threads() -> None:
    expression = compile_expression("event.n * 2 + vars.k")
    label = compile_expression("`${run.name}:${event.n}`")

    def work(i: int) -> tuple[Any, Any, Any]:
        context = {"event": {"n": i}, "vars": {"k": 1}, "run": {"name": f"t{i}"}}
        return (
            expression.evaluate(context),
            label.evaluate(encode_context(context)),
            compile_expression(f"event.n === {i}").truthy(context),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(200)))
    assert results == [(i * 2 + 1, f"t{i}:{i}", True) for i in range(200)]


def test_concurrent_evaluations_survive_a_timeout() -> None:
    loop = compile_expression("while (true) {}", JSLimits(timeout_s=0.05))
    value = compile_expression("event.n")

    def work(i: int) -> Any:
        if i % 10 == 0:
            with pytest.raises(JSTimeoutError):
                loop.evaluate({})
            return None
        return value.evaluate({"event": {"n": i}})

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(40)))
    assert results == [None if i % 10 == 0 else i for i in range(40)]


def test_collected_expressions_are_dropped() -> None:
    for i in range(50):
        assert compile_expression(f"{i} + 1").evaluate({}) == i + 1
    gc.collect()
    assert evaluate("2 + 2") == 4
    assert len(js._engine._defined) < 20
