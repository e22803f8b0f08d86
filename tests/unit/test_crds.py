"""The CustomResourceDefinitions in crds/: valid Kubernetes objects with structural schemas that
accept every example, reject what a schema can see, and reject nothing the engine accepts except
the listed, explained cases.

Offline stand-ins for the API server:
* `kubernetes-validate` checks each CRD against the Kubernetes schema of CustomResourceDefinition.
* `structural_violations` checks the structural-schema rules the API server enforces on the
  openAPIV3Schema itself (which kubernetes-validate cannot see).
* `schema_errors` validates custom resources with `jsonschema`, with the Kubernetes extensions
  translated: RE2 for `pattern`, `x-kubernetes-int-or-string`, list-map key uniqueness,
  `x-kubernetes-validations` evaluated by cel-python, and unknown fields rejected as `kubectl
  apply`'s default strict field validation does. `apiserver_view` applies what the API server does
  before validating: null fields pruned, defaults applied.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import re2
import yaml
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from hiphops.cli import main as hiphops_main
from hiphops.integrations import IntegrationInvalid, parse_integration
from hiphops.problems import SensorInvalid
from hiphops.runs import Run, RunState, TaskState, run_name
from hiphops.sensor import compile_sensor

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
EXAMPLE_DIRS = (ROOT / "examples" / "manifests", ROOT / "examples" / "local")
GROUP = "hiphops.io"
API_VERSION = f"{GROUP}/v1alpha1"
KINDS = ("Sensor", "Integration", "SensorRun")


def load_crds() -> dict[str, dict[str, Any]]:
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        crds[crd["spec"]["names"]["kind"]] = {**crd, "_file": path.name}
    return crds


CRDS = load_crds()


def crd_body(kind: str) -> dict[str, Any]:
    """A copy of the CRD as it would be sent to the API server (without the test's file name)."""
    return copy.deepcopy({k: v for k, v in CRDS[kind].items() if k != "_file"})


def version_of(kind: str) -> dict[str, Any]:
    versions: list[dict[str, Any]] = CRDS[kind]["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def openapi_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = version_of(kind)["schema"]["openAPIV3Schema"]
    return schema


# --- the structural-schema rules -----------------------------------------------------------------

JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
UNSUPPORTED = ("$ref", "definitions", "patternProperties", "dependencies", "additionalItems", "id")
# Under a junctor a schema may only repeat value validations, never declare structure.
FORBIDDEN_UNDER_JUNCTOR = (
    "type",
    "description",
    "title",
    "default",
    "additionalProperties",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
)
# With the status subresource the root may hold only these (apiextensions validation).
ROOT_FIELDS_WITH_STATUS = frozenset(
    [
        "description",
        "type",
        "format",
        "title",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "required",
        "items",
        "properties",
        "externalDocs",
        "example",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-validations",
    ]
)
VALIDATION_REASONS = frozenset(
    ("FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate")
)
CEL_MACROS = re.compile(r"\.(all|exists|exists_one|filter|map)\(")
JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def structural_violations(schema: Mapping[str, Any], *, status_subresource: bool) -> list[str]:
    """What the API server would reject in an openAPIV3Schema, as `path: problem` lines."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("openAPIV3Schema.type: must be object at the root")
    if "additionalProperties" in schema:
        problems.append("openAPIV3Schema.additionalProperties: must not be used at the root")
    if status_subresource:
        extra = sorted(set(schema) - ROOT_FIELDS_WITH_STATUS)
        if extra:
            problems.append(f"openAPIV3Schema: not allowed at the root with status: {extra}")
    metadata = schema.get("properties", {}).get("metadata")
    if metadata is not None:
        if metadata.get("type") != "object":
            problems.append("openAPIV3Schema.properties[metadata].type: must be object")
        if set(metadata) - {"type", "properties"} or set(metadata.get("properties", {})) - {
            "name",
            "generateName",
        }:
            problems.append(
                "openAPIV3Schema.properties[metadata]: may only restrict name and generateName"
            )
    _walk(schema, "openAPIV3Schema", problems, root=True, uncorrelatable=None)
    return problems


def _walk(
    node: Mapping[str, Any],
    path: str,
    problems: list[str],
    *,
    root: bool = False,
    uncorrelatable: str | None,
) -> None:
    kind = node.get("type")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        problems.append(f"{path}.x-kubernetes-preserve-unknown-fields: must be true or undefined")
    if not kind and not int_or_string and not preserve:
        problems.append(f"{path}.type: must not be empty")
    if int_or_string and (kind or preserve):
        problems.append(f"{path}: x-kubernetes-int-or-string takes no type and preserves nothing")
    if kind is not None and kind not in JSON_TYPES:
        problems.append(f"{path}.type: {kind!r} is not an OpenAPI v3 type")
    if kind == "array" and "items" not in node:
        problems.append(f"{path}.items: must be specified for an array")
    if "properties" in node and kind != "object":
        problems.append(f"{path}: properties need type object")
    if "items" in node and kind != "array":
        problems.append(f"{path}: items need type array")
    additional = node.get("additionalProperties")
    if additional is not None and "properties" in node and additional is not True:
        problems.append(f"{path}: additionalProperties and properties are mutually exclusive")
    for key in UNSUPPORTED:
        if key in node:
            problems.append(f"{path}.{key}: not supported")
    if node.get("uniqueItems"):
        problems.append(f"{path}.uniqueItems: cannot be true")
    for name in node.get("required", ()):
        if name not in node.get("properties", {}):
            problems.append(f"{path}.required: {name!r} is not a declared property")
    if "default" in node and kind in JSON_TYPES and not JSON_TYPES[kind](node["default"]):
        problems.append(f"{path}.default: not a {kind}")
    if "enum" in node and kind in JSON_TYPES:
        wrong = [v for v in node["enum"] if not JSON_TYPES[kind](v)]
        if wrong:
            problems.append(f"{path}.enum: {wrong!r} are not of type {kind}")
    if "pattern" in node:
        try:
            re2.compile(node["pattern"])
        except re2.error as exc:
            problems.append(f"{path}.pattern: not a valid RE2 expression: {exc}")
    _check_list_type(node, path, problems)
    _check_rules(node, path, problems, uncorrelatable)
    for junctor in JUNCTORS:
        subs = node.get(junctor)
        for index, sub in enumerate([subs] if isinstance(subs, dict) else subs or []):
            _check_junctor(sub, node, f"{path}.{junctor}[{index}]", problems)
    for name, sub in node.get("properties", {}).items():
        if root and name == "metadata":
            continue  # checked above; ObjectMeta is not ours to describe
        _walk(sub, f"{path}.properties[{name}]", problems, uncorrelatable=uncorrelatable)
    if isinstance(additional, dict):
        # Map values are correlated by key between an object's old and new version.
        _walk(additional, f"{path}.additionalProperties", problems, uncorrelatable=uncorrelatable)
    if isinstance(node.get("items"), dict):
        # Only list-type map items can be correlated with their old version (for oldSelf).
        correlated = node.get("x-kubernetes-list-type") == "map"
        _walk(
            node["items"],
            f"{path}.items",
            problems,
            uncorrelatable=uncorrelatable or (None if correlated else path),
        )


def _check_list_type(node: Mapping[str, Any], path: str, problems: list[str]) -> None:
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        problems.append(f"{path}.x-kubernetes-list-type: {list_type!r} not supported")
    if keys and list_type != "map":
        problems.append(f"{path}.x-kubernetes-list-type: must be map with list-map-keys")
    if list_type == "map":
        items = node.get("items", {})
        if not keys or items.get("type") != "object":
            problems.append(f"{path}: a map list needs list-map-keys and object items")
        for key in keys or ():
            prop = items.get("properties", {}).get(key)
            if prop is None or prop.get("type") in ("object", "array", None):
                problems.append(f"{path}: list-map key {key!r} must be a scalar property")
            elif key not in items.get("required", ()) and "default" not in prop:
                problems.append(f"{path}: list-map key {key!r} must be required or defaulted")


def _check_rules(
    node: Mapping[str, Any], path: str, problems: list[str], uncorrelatable: str | None
) -> None:
    for index, rule in enumerate(node.get("x-kubernetes-validations", ())):
        where = f"{path}.x-kubernetes-validations[{index}]"
        text, message = rule.get("rule", "").strip(), rule.get("message")
        if not text:
            problems.append(f"{where}.rule: rule is not specified")
        if message is not None and (not message.strip() or re.search(r"[\r\n]", message)):
            problems.append(f"{where}.message: must be one non-empty line")
        if "reason" in rule and rule["reason"] not in VALIDATION_REASONS:
            problems.append(f"{where}.reason: {rule['reason']!r} not supported")
        if "oldSelf" in text and uncorrelatable is not None:
            problems.append(f"{where}: oldSelf cannot be used below the list {uncorrelatable}")
        if CEL_MACROS.search(text):
            problems.extend(f"{where}: {p}" for p in _unbounded_cost(node, text))


def _unbounded_cost(node: Mapping[str, Any], rule: str) -> list[str]:
    """A rule iterating over a list is estimated from maxItems and from the maxLength of the
    strings it compares; without them the API server refuses the CRD as too costly."""
    if node.get("type") != "array":
        return []
    problems = [] if "maxItems" in node else ["a list iterated by a rule needs maxItems"]
    item_properties = node.get("items", {}).get("properties", {})
    for name in sorted(set(re.findall(r"\.(\w+)\b(?!\()", rule))):
        prop = item_properties.get(name)
        if prop is not None and prop.get("type") == "string" and "maxLength" not in prop:
            problems.append(f"a string compared by a rule needs maxLength: {name}")
    return problems


def _check_junctor(
    sub: Mapping[str, Any], outer: Mapping[str, Any], path: str, problems: list[str]
) -> None:
    for key in FORBIDDEN_UNDER_JUNCTOR:
        if key in sub:
            problems.append(f"{path}.{key}: must not be set under a junctor to be structural")
    for name, prop in sub.get("properties", {}).items():
        if name not in outer.get("properties", {}):
            problems.append(f"{path}.properties[{name}]: must also be specified outside")
        else:
            _check_junctor(prop, outer["properties"][name], f"{path}.properties[{name}]", problems)
    if "items" in sub:
        if "items" not in outer:
            problems.append(f"{path}.items: must also be specified outside")
        else:
            _check_junctor(sub["items"], outer["items"], f"{path}.items", problems)


# --- custom resources validated as the API server would ------------------------------------------


def to_json_schema(node: Mapping[str, Any], *, root: bool = True) -> dict[str, Any]:
    """An openAPIV3Schema node as JSON Schema. Objects are closed, as with `kubectl apply`'s
    default strict field validation, except where unknown fields are preserved and in ObjectMeta,
    which the API server validates itself."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_json_schema(sub, root=False) for name, sub in value.items()}
            if root and "metadata" in value:
                out[key]["metadata"].pop("additionalProperties", None)
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value, root=False)
        elif key == "x-kubernetes-int-or-string":
            out["type"] = ["integer", "string"]
        else:
            out[key] = value
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _re2_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    # The API server matches with Go's RE2, where `$` is the end of the text; Python's `re`
    # (jsonschema's default) also lets `$` match before a final newline.
    if isinstance(instance, str) and not re2.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def cel_program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_holds(rule: str, **bindings: Any) -> bool:
    """Evaluate a CEL rule with `self` (and `oldSelf`) bound to JSON values; errors are false,
    as they are for the API server."""
    activation = {name: json_to_cel(value) for name, value in bindings.items()}
    try:
        result = cel_program(rule).evaluate(activation)
    except CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def _cel_rules(
    validator: Any, rules: list[dict[str, str]], instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if "type" in schema and not validator.is_type(instance, schema["type"]):
        return  # the type check reports this value; the rules are written for the right type
    for rule in rules:
        if "oldSelf" in rule["rule"]:
            continue  # transition rules run on updates only
        if not cel_holds(rule["rule"], self=instance):
            yield jsonschema.ValidationError(rule.get("message", f"failed rule: {rule['rule']}"))


def _unique_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list):
        return
    seen = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(json.dumps(item.get(k)) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(
                    f"duplicate entry for key {dict(zip(keys, key, strict=True))}"
                )
            seen.add(key)


def _is_date_time(value: object) -> bool:
    """RFC 3339 with a time zone, as Kubernetes' date-time format (formats apply to strings)."""
    if not isinstance(value, str):
        return True
    try:
        return "T" in value.upper() and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time")(_is_date_time)
K8sValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={
        "pattern": _re2_pattern,
        "x-kubernetes-validations": _cel_rules,
        "x-kubernetes-list-map-keys": _unique_map_keys,
    },
)


@functools.cache
def validator_for(kind: str) -> Any:
    return K8sValidator(to_json_schema(openapi_schema(kind)), format_checker=FORMATS)


def apiserver_view(value: Any, node: Mapping[str, Any]) -> Any:
    """What the API server keeps before validating: declared fields that are null are pruned
    (none of ours is nullable) and defaults fill absent fields."""
    if isinstance(value, dict) and "properties" in node:
        properties = node["properties"]
        out = {}
        for key, item in value.items():
            if key in properties and item is None:
                continue
            out[key] = apiserver_view(item, properties[key]) if key in properties else item
        for key, prop in properties.items():
            if key not in out and "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
        return out
    if isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        return {k: apiserver_view(v, node["additionalProperties"]) for k, v in value.items()}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apiserver_view(item, node["items"]) for item in value]
    return value


def schema_errors(manifest: Mapping[str, Any]) -> list[str]:
    """The errors the API server would report for a custom resource, as `path: message`."""
    kind = manifest["kind"]
    stored = apiserver_view(manifest, openapi_schema(kind))
    errors = validator_for(kind).iter_errors(stored)
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}" for error in errors
    )


def manifest(kind: str, spec: Any, name: str = "example") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": "demo"},
        "spec": spec,
    }


def engine_accepts(document: Mapping[str, Any]) -> bool:
    """Whether the engine accepts what the API server stored (as the operator would read it)."""
    stored = apiserver_view(document, openapi_schema(document["kind"]))
    try:
        if stored["kind"] == "Sensor":
            compile_sensor(stored["spec"], name=stored["metadata"]["name"], project="demo")
        else:
            parse_integration(stored, default_project="demo")
    except (SensorInvalid, IntegrationInvalid):
        return False
    return True


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for directory in EXAMPLE_DIRS:
        for path in sorted(directory.glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            for index, document in enumerate(yaml.safe_load_all(text), start=1):
                if document and document.get("apiVersion") == API_VERSION:
                    documents.append((f"{path.relative_to(ROOT)}#{index}", document))
    return documents


EXAMPLES = example_documents()


# --- the CRDs as Kubernetes objects --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_crd_validates_against_the_kubernetes_schema(kind: str) -> None:
    version = kubernetes_validate.latest_version()
    # strict: an unknown (misspelled) field anywhere in the CRD, schema included, is an error
    checked = kubernetes_validate.validate(crd_body(kind), version, strict=True)
    assert version.startswith(f"{checked}.")


def test_kubernetes_validate_catches_a_misspelled_schema_keyword() -> None:
    body = crd_body("Sensor")
    body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["maxItem"] = 3
    with pytest.raises(kubernetes_validate.ValidationError, match="maxItem"):
        kubernetes_validate.validate(body, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_names_scope_and_subresources(kind: str) -> None:
    crd = CRDS[kind]
    spec = crd["spec"]
    names = spec["names"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{names['plural']}.{GROUP}"
    assert crd["_file"] == f"{crd['metadata']['name']}.yaml"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert names["kind"] == kind
    assert names["listKind"] == f"{kind}List"
    assert names["singular"] == kind.lower()
    assert names["categories"] == ["hiphops"]
    version = version_of(kind)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


# Short names of the built-in resources (`kubectl api-resources`): ours must not shadow them.
BUILTIN_SHORT_NAMES = frozenset(
    {"cm", "cs", "csr", "crd", "crds", "cj", "deploy", "ds", "ep", "ev", "hpa", "ing", "limits"}
    | {"netpol", "no", "ns", "pc", "pdb", "po", "pv", "pvc", "quota", "rc", "rs", "sa", "sc"}
    | {"sts", "svc"}
)


def test_short_names_are_unique_and_shadow_no_builtin() -> None:
    short = [name for kind in KINDS for name in CRDS[kind]["spec"]["names"]["shortNames"]]
    assert len(short) == len(set(short)) == 3
    assert not set(short) & BUILTIN_SHORT_NAMES
    plurals = {CRDS[kind]["spec"]["names"]["plural"] for kind in KINDS}
    assert not set(short) & plurals


# --- structural schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    assert structural_violations(openapi_schema(kind), status_subresource=True) == []


NON_STRUCTURAL = {
    "untyped field": (
        {"type": "object", "properties": {"a": {"description": "x"}}},
        "properties[a].type: must not be empty",
    ),
    "properties with additionalProperties": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "object",
                    "properties": {"b": {"type": "string"}},
                    "additionalProperties": {"type": "string"},
                }
            },
        },
        "additionalProperties and properties are mutually exclusive",
    ),
    "array without items": (
        {"type": "object", "properties": {"a": {"type": "array"}}},
        "items: must be specified",
    ),
    "type under anyOf": (
        {"type": "object", "properties": {"a": {"type": "string", "anyOf": [{"type": "integer"}]}}},
        "anyOf[0].type: must not be set under a junctor",
    ),
    "preserve false": (
        {
            "type": "object",
            "properties": {"a": {"type": "object", "x-kubernetes-preserve-unknown-fields": False}},
        },
        "must be true or undefined",
    ),
    "metadata restricted beyond name": (
        {
            "type": "object",
            "properties": {
                "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}
            },
        },
        "may only restrict name and generateName",
    ),
    "oldSelf below an atomic list": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
                    },
                }
            },
        },
        "oldSelf cannot be used below the list",
    ),
    "list map key not required": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["k"],
                    "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                }
            },
        },
        "must be required or defaulted",
    ),
    "unbounded list in a rule": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "array",
                    "x-kubernetes-validations": [{"rule": "self.all(x, x.k != '')"}],
                    "items": {
                        "type": "object",
                        "properties": {"k": {"type": "string", "maxLength": 5}},
                    },
                }
            },
        },
        "needs maxItems",
    ),
    "unbounded string in a rule": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "array",
                    "maxItems": 5,
                    "x-kubernetes-validations": [{"rule": "self.all(x, x.k != '')"}],
                    "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                }
            },
        },
        "needs maxLength: k",
    ),
    "additionalProperties at the root": (
        {"type": "object", "additionalProperties": {"type": "string"}},
        "must not be used at the root",
    ),
    "required field not declared": (
        {
            "type": "object",
            "properties": {
                "a": {"type": "object", "required": ["b"], "properties": {"c": {"type": "string"}}}
            },
        },
        "'b' is not a declared property",
    ),
    "unquoted YAML boolean in a string enum": (
        {"type": "object", "properties": {"a": {"type": "string", "enum": [True, "False"]}}},
        "[True] are not of type string",
    ),
}


@pytest.mark.parametrize("case", sorted(NON_STRUCTURAL))
def test_structural_checker_catches(case: str) -> None:
    schema, expected = NON_STRUCTURAL[case]
    problems = structural_violations(schema, status_subresource=False)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("kind", KINDS)
def test_cel_rules_parse(kind: str) -> None:
    rules: list[str] = []

    def collect(node: Mapping[str, Any]) -> None:
        rules.extend(rule["rule"] for rule in node.get("x-kubernetes-validations", ()))
        for sub in node.get("properties", {}).values():
            collect(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                collect(node[key])

    collect(openapi_schema(kind))
    assert rules, f"{kind} has no CEL rules"
    for rule in rules:
        assert cel_program(rule) is not None
    with pytest.raises(CELParseError):
        celpy.Environment().compile("self.all(t, ")


# --- printer columns -----------------------------------------------------------------------------

COLUMN_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean", "date": "string"}
OBJECT_META = {"creationTimestamp": {"type": "string", "format": "date-time"}}


def schema_at(schema: Mapping[str, Any], json_path: str) -> Mapping[str, Any] | None:
    """The schema node a printer column's JSONPath reads (filters step into list items)."""
    node: Mapping[str, Any] | None = schema
    for token in re.findall(r"\[[^\]]*\]|[A-Za-z_][A-Za-z0-9_]*", json_path):
        if node is None:
            return None
        if token.startswith("["):
            node = node.get("items")
        elif node is schema.get("properties", {}).get("metadata"):
            node = OBJECT_META.get(token)
        else:
            node = node.get("properties", {}).get(token)
    return node


EXPECTED_COLUMNS = {
    "Sensor": ["Ready", "Tasks", "Last Matched", "Age"],
    "SensorRun": ["Sensor", "State", "Started", "Duration", "Age"],
    "Integration": ["Type", "Ready", "Webhook Path", "Age"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_read_declared_fields(kind: str) -> None:
    columns = version_of(kind)["additionalPrinterColumns"]
    default = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert default == EXPECTED_COLUMNS[kind]
    for column in columns:
        node = schema_at(openapi_schema(kind), column["jsonPath"])
        assert node is not None, f"{column['name']}: {column['jsonPath']} is not in the schema"
        assert node.get("type") == COLUMN_TYPES[column["type"]], column["name"]
        if column["type"] == "date":
            assert node.get("format") == "date-time", column["name"]


def test_ready_columns_read_the_ready_condition() -> None:
    for kind in ("Sensor", "Integration"):
        (ready,) = [c for c in version_of(kind)["additionalPrinterColumns"] if c["name"] == "Ready"]
        assert ready["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
        conditions = openapi_schema(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


# --- the examples are valid custom resources -----------------------------------------------------


def test_examples_cover_sensors_and_integrations() -> None:
    kinds = [document["kind"] for _, document in EXAMPLES]
    assert kinds.count("Sensor") >= 6
    assert kinds.count("Integration") >= 2


@pytest.mark.parametrize(("where", "document"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_validates_against_its_crd(where: str, document: dict[str, Any]) -> None:
    assert document["kind"] in ("Sensor", "Integration")
    assert schema_errors(document) == []
    assert engine_accepts(document)


def test_converted_hiphops_form_sensors_are_valid_resources(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert hiphops_main(["convert", "--namespace", "demo", str(ROOT / "examples" / "sensors")]) == 0
    converted = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert len(converted) >= 6
    for document in converted:
        assert schema_errors(document) == [], document["metadata"]["name"]


# --- what the schema rejects ---------------------------------------------------------------------

TASK = {"name": "github.merge_pr", "id": "merge", "input": {"merge_method": "squash"}}
GITHUB = {"tokenSecretRef": {"name": "gh", "key": "token"}}
SLACK = {"botTokenSecretRef": {"name": "slack", "key": "bot-token"}}


def sensor(**spec: Any) -> dict[str, Any]:
    return manifest("Sensor", {"tasks": [TASK], **spec})


def integration(kind: str, **blocks: Any) -> dict[str, Any]:
    return manifest("Integration", {"type": kind, **blocks})


REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "task without name": (sensor(tasks=[{"id": "a"}]), "spec.tasks.0: 'name' is a required"),
    "bad task name": (sensor(tasks=[{"name": "merge_pr"}]), "spec.tasks.0.name: 'merge_pr'"),
    "upper-case task name": (sensor(tasks=[{"name": "GitHub.merge"}]), "spec.tasks.0.name"),
    "tasks empty": (sensor(tasks=[]), "spec.tasks: [] should be non-empty"),
    "tasks missing": (manifest("Sensor", {"id": "x"}), "spec: 'tasks' is a required"),
    "spec missing": ({**sensor(), "spec": None}, ": 'spec' is a required"),
    "bad task id": (sensor(tasks=[{**TASK, "id": "a.b"}]), "spec.tasks.0.id: 'a.b'"),
    "numeric task id": (sensor(tasks=[{**TASK, "id": 1}]), "spec.tasks.0.id: 1 is not of type"),
    "duplicate task ids": (
        sensor(tasks=[TASK, {**TASK, "name": "slack.post_message"}]),
        "spec.tasks: task ids must be unique",
    ),
    "unknown task field": (
        sensor(tasks=[{**TASK, "inputs": {}}]),
        "spec.tasks.0: Additional properties are not allowed ('inputs'",
    ),
    "unknown sensor field": (sensor(task=[]), "spec: Additional properties are not allowed"),
    "when is a list": (sensor(when=["event.x"]), "spec.when: ['event.x'] is not of type 'object'"),
    "task depends is a string": (
        sensor(tasks=[{**TASK, "depends": "merge"}]),
        "spec.tasks.0.depends: 'merge' is not of type 'object'",
    ),
    "input is a list": (
        sensor(tasks=[{**TASK, "input": [1]}]),
        "spec.tasks.0.input: [1] is not of type 'object'",
    ),
    "enabled is a string": (sensor(enabled="yes"), "spec.enabled: 'yes' is not of type 'boolean'"),
    "blank display id": (sensor(id="  "), "spec.id: '  ' does not match"),
    "vars is a list": (sensor(vars=["a"]), "spec.vars: ['a'] is not of type 'object'"),
    "sensor name with a dot": (
        {**sensor(), "metadata": {"name": "my.sensor"}},
        "metadata.name: 'my.sensor' does not match",
    ),
    "integration type gitlab": (
        integration("gitlab", gitlab={}),
        "spec.type: 'gitlab' is not one of ['github', 'slack']",
    ),
    "integration without type": (manifest("Integration", {"github": GITHUB}), "spec: 'type'"),
    "secret ref without key": (
        integration("github", github={"tokenSecretRef": {"name": "gh"}}),
        "spec.github.tokenSecretRef: 'key' is a required property",
    ),
    "secret ref with empty name": (
        integration("slack", slack={"signingSecretRefs": [{"name": "", "key": "k"}]}),
        "spec.slack.signingSecretRefs.0.name: '' should be non-empty",
    ),
    "webhook secrets not a list": (
        integration("github", github={"webhookSecretRefs": {"name": "a", "key": "b"}}),
        "spec.github.webhookSecretRefs: {'name': 'a', 'key': 'b'} is not of type 'array'",
    ),
    "github type with slack block": (
        integration("github", github=GITHUB, slack=SLACK),
        "spec: spec.slack is required when type is slack, and not allowed otherwise",
    ),
    "github type without github block": (
        integration("github"),
        "spec: spec.github is required when type is github, and not allowed otherwise",
    ),
    "app id without private key": (
        integration("github", github={"appID": 12345}),
        "spec.github: a GitHub App needs both appID and privateKeySecretRef",
    ),
    "api url not http": (
        integration("slack", slack={**SLACK, "apiURL": "ftp://x"}),
        "spec.slack.apiURL: 'ftp://x' does not match",
    ),
    "unknown github field": (
        integration("github", github={**GITHUB, "token": "inline"}),
        "spec.github: Additional properties are not allowed ('token'",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_schema_rejects(case: str) -> None:
    document, expected = REJECTED[case]
    errors = schema_errors(document)
    assert any(e.startswith(expected) for e in errors), errors


ACCEPTED = {
    "minimal sensor": sensor(),
    "tasks without ids": sensor(tasks=[{"name": "a.b"}, {"name": "a.c"}]),
    "numeric id at its own index": sensor(tasks=[{**TASK, "id": "0"}]),
    "empty when": sensor(when={}),
    "null fields are pruned": sensor(id=None, when=None, enabled=None, vars=None),
    "free-form clause keys": sensor(when={"(not)event.labels": ["a", "!b"], "$": "true"}),
    "app id as a number": integration(
        "github", github={"appID": 12345, "privateKeySecretRef": {"name": "a", "key": "k"}}
    ),
    "app id as a string": integration(
        "github", github={"appID": "12345", "privateKeySecretRef": {"name": "a", "key": "k"}}
    ),
    "empty api url means the default": integration("slack", slack={**SLACK, "apiURL": ""}),
    "no webhook secrets": integration("github", github={}),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_schema_accepts(case: str) -> None:
    assert schema_errors(ACCEPTED[case]) == []
    assert engine_accepts(ACCEPTED[case])


def test_enabled_defaults_to_true() -> None:
    stored = apiserver_view(sensor(), openapi_schema("Sensor"))
    assert stored["spec"]["enabled"] is True


# --- the schema never rejects what the engine accepts --------------------------------------------

REPLACEMENTS: tuple[Any, ...] = (None, True, 7, 2.5, "", "x", "a.b", [], ["x"], {}, {"x": "y"})
UNKNOWN_KEY = "unexpected"
DELETED = "<deleted>"


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*path, index))


def mutations(
    spec: dict[str, Any], fields: Mapping[tuple[Any, ...], list[str]]
) -> Iterator[tuple[tuple[Any, ...], Any, dict[str, Any]]]:
    """Variants of a spec, each with one change: a value replaced by each of REPLACEMENTS, a key
    deleted, an unknown key added to a map, a list's first item repeated, or an absent declared
    field (`fields`, by parent path) set to each of REPLACEMENTS. Yields (path, value, spec), with
    DELETED as the value of a deletion."""

    def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
        variant = copy.deepcopy(spec)
        parent = _get(variant, path[:-1])
        if value is DELETED:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(value)
        return variant

    for path, value in list(_nodes(spec)):
        if path:
            for replacement in REPLACEMENTS:
                yield path, replacement, changed(path, replacement)
            if isinstance(_get(spec, path[:-1]), dict):
                yield path, DELETED, changed(path, DELETED)
        if isinstance(value, dict):
            yield (*path, UNKNOWN_KEY), "x", changed((*path, UNKNOWN_KEY), "x")
        if isinstance(value, list) and value:
            duplicated = [*value, value[0]]
            yield path, duplicated, changed(path, duplicated)
    for where, names in fields.items():
        for parent_path, parent in list(_nodes(spec)):
            if _shape(parent_path) != where or not isinstance(parent, dict):
                continue
            for name in names:
                if name not in parent:
                    for replacement in REPLACEMENTS:
                        path = (*parent_path, name)
                        yield path, replacement, changed(path, replacement)


def _shape(path: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("[]" if isinstance(key, int) else key for key in path)


def engine_leniency(kind: str, path: tuple[Any, ...], value: Any) -> str | None:
    """Why the schema may reject a change the engine accepts, or None when it may not.
    Engine leniencies are the engine's to fix; the schema is right to reject these."""
    shape = _shape(path)
    if kind == "Sensor" and shape == ("vars",) and not value and not isinstance(value, dict):
        return "engine: `spec.get('vars') or {}` accepts any falsy vars"
    if kind == "Integration":
        if shape[-1:] == ("apiURL",) and not value:
            return "engine: `body.get('apiURL') or default` accepts any falsy apiURL"
        if shape in (("github",), ("slack",)) and (value is DELETED or value is None):
            return "schema, deliberately: an integration of a type needs its block"
        if shape in (("github",), ("slack",)) and not value:
            return "engine: `spec.get(kind) or {}` accepts any falsy block"
    return None


def _fields_of(
    node: Mapping[str, Any], path: tuple[Any, ...] = ()
) -> dict[tuple[Any, ...], list[str]]:
    fields = {path: list(node.get("properties", {}))} if "properties" in node else {}
    for name, sub in node.get("properties", {}).items():
        fields.update(_fields_of(sub, (*path, name)))
    if isinstance(node.get("items"), dict):
        fields.update(_fields_of(node["items"], (*path, "[]")))
    return fields


@pytest.mark.parametrize(("where", "document"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_schema_never_rejects_what_the_engine_accepts(where: str, document: dict[str, Any]) -> None:
    kind = document["kind"]
    fields = _fields_of(openapi_schema(kind)["properties"]["spec"])
    rejected = 0
    failures = []
    for path, value, spec in mutations(document["spec"], fields):
        variant = {**document, "spec": spec}
        if not schema_errors(variant):
            continue
        rejected += 1
        if engine_accepts(variant) and engine_leniency(kind, path, value) is None:
            failures.append(
                f"spec.{'.'.join(map(str, path))} = {value!r}: {schema_errors(variant)}"
            )
    assert not failures, "the schema rejects, the engine accepts:\n" + "\n".join(failures[:20])
    assert rejected >= 10, f"only {rejected} changes rejected: the check would prove little"


# Curated cases beyond single changes: (schema rejects, engine rejects, why they differ).
CURATED: dict[str, tuple[dict[str, Any], bool, bool, str]] = {
    "dotted sensor name": ({**sensor(), "metadata": {"name": "a.b"}}, True, True, ""),
    "upper-case sensor name": ({**sensor(), "metadata": {"name": "Auto"}}, True, True, ""),
    "numeric id that is not its index": (
        sensor(tasks=[{**TASK, "id": "3"}]),
        False,
        True,
        "engine only: the operator reports it in the Ready condition",
    ),
    "JavaScript that does not compile": (
        sensor(when={"$": "event.x ==="}),
        False,
        True,
        "engine only: the operator reports it in the Ready condition",
    ),
    "dependency cycle": (
        sensor(
            tasks=[
                {"name": "a.b", "id": "x", "depends": {"tasks.y.state": "COMPLETE"}},
                {"name": "a.b", "id": "y", "depends": {"tasks.x.state": "COMPLETE"}},
            ]
        ),
        False,
        True,
        "engine only: the operator reports it in the Ready condition",
    ),
    "newline after the task name": (
        sensor(tasks=[{**TASK, "name": "github.merge_pr\n"}]),
        True,
        True,
        "",
    ),
    "newline after the task id": (
        sensor(tasks=[{**TASK, "id": "merge\n"}]),
        True,
        True,
        "",
    ),
    "boolean app id": (
        integration(
            "github", github={"appID": True, "privateKeySecretRef": {"name": "a", "key": "k"}}
        ),
        True,
        True,
        "",
    ),
    "a 64-character task id": (
        sensor(tasks=[{**TASK, "id": "t" * 64}]),
        True,
        True,
        "",
    ),
    "101 tasks": (
        sensor(tasks=[{"name": "a.b"}] * 101),
        True,
        True,
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(CURATED))
def test_curated_schema_engine_agreement(case: str) -> None:
    document, schema_rejects, engine_rejects, why = CURATED[case]
    assert bool(schema_errors(document)) == schema_rejects
    assert (not engine_accepts(document)) == engine_rejects, why
    # The one direction that must hold, or be explained: schema rejects => engine rejects.
    assert engine_rejects or not schema_rejects or why


# --- SensorRun: what the engine records fits the status ------------------------------------------

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def sensor_run_from_engine() -> tuple[dict[str, Any], Run]:
    """A real run of an example sensor, as the operator would record it: one task COMPLETE, one
    FAILURE, one SKIPPED."""
    name = "welcome-new-pull-requests"
    (document,) = [d for _, d in EXAMPLES if d["metadata"]["name"] == name]
    compiled = compile_sensor(document["spec"], name=name, project="demo")
    event = json.loads((ROOT / "examples/events/pull_request.opened.json").read_text())
    delivery = event["hiphops"]["delivery"]
    run = Run.start(compiled, event, name=run_name(delivery, "demo", name), now=T0)
    assert [t.id for t in run.advance(T0)] == ["comment"]
    run.mark_running("comment", T0 + timedelta(seconds=1))
    ready = run.complete("comment", {"html_url": "https://x/1"}, T0 + timedelta(seconds=2))
    assert [t.id for t in ready] == ["notify"]
    run.mark_running("notify", T0 + timedelta(seconds=3))
    run.fail("notify", "channel_not_found", T0 + timedelta(seconds=4))
    assert run.record.state is RunState.FAILURE
    record = json.loads(json.dumps(run.record.to_dict()))  # what goes over the wire
    status = {k: record[k] for k in ("state", "started", "finished", "error")}
    status["duration"] = "4s"
    status["tasks"] = record["tasks"]
    resource = {
        **manifest(
            "SensorRun",
            {
                "sensor": record["sensor"],
                "sensorID": record["sensor_id"],
                "delivery": delivery,
                "event": record["event"],
                "sensorSnapshot": document["spec"],
            },
            name=record["name"],
        ),
        "status": status,
    }
    return resource, run


def test_engine_run_record_fits_the_sensorrun_schema() -> None:
    resource, run = sensor_run_from_engine()
    states = {t.id: t.state for t in run.record.tasks}
    assert states == {
        "comment": TaskState.COMPLETE,
        "notify": TaskState.FAILURE,
        "comment_failed": TaskState.SKIPPED,
    }
    assert schema_errors(resource) == []
    # Every TaskRecord field is declared: a new one fails here until the CRD has it.
    declared = openapi_schema("SensorRun")["properties"]["status"]["properties"]["tasks"]["items"]
    assert set(resource["status"]["tasks"][0]) <= set(declared["properties"])


def test_sensorrun_status_rejects_unknown_states_and_duplicate_tasks() -> None:
    resource, _ = sensor_run_from_engine()
    bad_state = copy.deepcopy(resource)
    bad_state["status"]["tasks"][0]["state"] = "SUCCESS"
    assert any("'SUCCESS' is not one of" in e for e in schema_errors(bad_state))
    duplicated = copy.deepcopy(resource)
    duplicated["status"]["tasks"].append(duplicated["status"]["tasks"][0])
    assert any("duplicate entry" in e for e in schema_errors(duplicated))
    bad_time = copy.deepcopy(resource)
    bad_time["status"]["started"] = "yesterday"
    assert any("'yesterday' is not a 'date-time'" in e for e in schema_errors(bad_time))


def test_sensorrun_identity_fields_are_immutable() -> None:
    spec = openapi_schema("SensorRun")["properties"]["spec"]["properties"]
    for name in ("sensor", "sensorID", "delivery"):
        (rule,) = spec[name]["x-kubernetes-validations"]
        assert cel_holds(rule["rule"], self="a", oldSelf="a")
        assert not cel_holds(rule["rule"], self="b", oldSelf="a")


def test_unique_task_id_rule() -> None:
    tasks = openapi_schema("Sensor")["properties"]["spec"]["properties"]["tasks"]
    (rule,) = tasks["x-kubernetes-validations"]
    length = tasks["items"]["properties"]["id"]["maxLength"]
    # The longest ids, differing only in their last characters. (cel-python takes seconds for
    # maxItems tasks, so the list is shorter; Kubernetes bounds the cost by maxItems.)
    longest = [{"name": "a.b", "id": f"{i:0{length}d}"} for i in range(20)]
    assert cel_holds(rule["rule"], self=longest)
    assert not cel_holds(rule["rule"], self=[*longest, longest[7]])
    without_ids = [{"name": "a.b"}, {"name": "a.b"}, {"name": "a.b", "id": "x"}]
    assert cel_holds(rule["rule"], self=without_ids)
