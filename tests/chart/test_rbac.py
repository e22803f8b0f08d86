"""The chart's RBAC is least-privilege: no wildcards, and per resource exactly the verbs the
operator uses, read from its code (operator/*.py, with Python's ast) plus what kopf itself needs.

A new API call in operator/ without its rule fails here, and so does a rule nothing uses.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

import pytest

from hiphops.loader import API_GROUP
from tests.chart.conftest import MODES, NAMESPACE, ROOT, find, one

OPERATOR = ROOT / "operator"
#: kube.Kube's methods and the RBAC verb each one needs.
KUBE_VERBS = {
    "get": "get",
    "list": "list",
    "iterate": "list",
    "create": "create",
    "patch": "patch",
    "delete": "delete",
}
PEERING_CONSTANTS = {"CLUSTER_PEERINGS", "PEERINGS"}
Permission = tuple[str, str, str]  # (apiGroup, resource, verb)


def resource_constants() -> dict[str, tuple[str, str]]:
    """operator/kube.py's `NAME: Final = Resource(group, version, plural, kind, ...)`."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.parse((OPERATOR / "kube.py").read_text()).body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "Resource"
        ):
            args = node.value.args
            # The group is a literal, or the engine's API_GROUP constant.
            group = API_GROUP if isinstance(args[0], ast.Name) else ast.literal_eval(args[0])
            found[node.target.id] = (str(group), str(ast.literal_eval(args[2])))
    return found


RESOURCES = resource_constants()


def _kube_method(node: ast.AST) -> str | None:
    """`x.kube.get` / `x._kube.get` / `kube.get` -> "get"."""
    if isinstance(node, ast.Attribute) and node.attr in KUBE_VERBS:
        owner = node.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if name in ("kube", "_kube", "client"):
            return node.attr
    return None


def _subresource(call: ast.Call) -> str:
    for keyword in call.keywords:
        if keyword.arg == "subresource" and isinstance(keyword.value, ast.Constant):
            return f"/{keyword.value.value!s}"
    return ""


def _is_partial(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (
        getattr(node.func, "attr", getattr(node.func, "id", "")) == "partial"
    )


class _Scanner:
    """Collects (constant, verb) pairs over modules: direct calls, functions passed on with their
    arguments (`asyncio.to_thread(f, ...)`, `self._api(f, ...)`, `functools.partial(f, ...)`),
    and helpers that take the resource as a parameter (e.g. `kube.patch_status`)."""

    def __init__(self, trees: list[ast.Module]) -> None:
        self.trees = trees
        self.helpers: dict[str, tuple[str, int, str]] = {}  # name -> (method, arg index, sub)
        self.found: set[tuple[str, str]] = set()

    def _functions(self) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
        for tree in self.trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield node

    @staticmethod
    def _targets(call: ast.Call) -> Iterator[tuple[ast.AST, list[ast.expr], str]]:
        """(what is called, its arguments, subresource) for the call itself and for a function
        it passes on, with the arguments after that function (and a partial's own)."""
        yield call.func, list(call.args), _subresource(call)
        for index, arg in enumerate(call.args):
            rest = list(call.args[index + 1 :])
            if isinstance(arg, ast.Call) and _is_partial(arg) and arg.args:
                sub = _subresource(arg) or _subresource(call)
                yield arg.args[0], list(arg.args[1:]) + rest, sub
            elif isinstance(arg, ast.Attribute | ast.Name):
                yield arg, rest, _subresource(call)

    def _record(
        self,
        function: ast.FunctionDef | ast.AsyncFunctionDef,
        method: str,
        argument: ast.AST,
        sub: str,
    ) -> None:
        if isinstance(argument, ast.Name) and argument.id in RESOURCES:
            self.found.add((argument.id + sub, method))
            return
        params = [a.arg for a in function.args.args if a.arg != "self"]
        if isinstance(argument, ast.Name) and argument.id in params:
            self.helpers[function.name] = (method, params.index(argument.id), sub)
            return
        # A resource chosen at run time (a loop over constants): every constant the function
        # names is a candidate.
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and node.id in RESOURCES:
                self.found.add((node.id + sub, method))

    def scan(self) -> set[tuple[str, str]]:
        # Repeated until no new helper appears: a helper may call a helper.
        while True:
            helpers = dict(self.helpers)
            for function in self._functions():
                for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                    for target, args, sub in self._targets(call):
                        method = _kube_method(target)
                        name = getattr(target, "attr", getattr(target, "id", None))
                        if method is not None and args:
                            self._record(function, method, args[0], sub)
                        elif name in self.helpers:
                            helper_method, index, helper_sub = self.helpers[name]
                            if len(args) > index:
                                self._record(function, helper_method, args[index], helper_sub)
            if helpers == self.helpers:
                return self.found


def operator_calls() -> set[tuple[str, str]]:
    """(resource constant [+ "/status"], kube method) for every API call in operator/. The
    client (kube.Kube) calls only `self.request`, so its own methods add nothing; kube.py's
    module-level helpers are found like any other."""
    trees = [ast.parse(path.read_text()) for path in sorted(OPERATOR.glob("*.py"))]
    return _Scanner(trees).scan()


def kopf_watched() -> set[str]:
    """Resource constants of `@kopf.on.event(X.group, X.version, X.plural)` handlers."""
    watched = set()
    for path in sorted(OPERATOR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "on"
            ):
                for arg in node.args:
                    if (
                        isinstance(arg, ast.Attribute)
                        and isinstance(arg.value, ast.Name)
                        and arg.value.id in RESOURCES
                    ):
                        watched.add(arg.value.id)
    return watched


def needed(namespaced: bool, peering: bool = True) -> tuple[set[Permission], set[Permission]]:
    """(what the operator needs in its served namespaces, what it needs cluster-wide)."""
    work: set[Permission] = set()
    for constant, method in operator_calls():
        base, _, sub = constant.partition("/")
        if base in PEERING_CONSTANTS:
            continue  # added below for the mode's peering kind
        group, plural = RESOURCES[base]
        work.add((group, plural + (f"/{sub}" if sub else ""), KUBE_VERBS[method]))
    for constant in kopf_watched():
        group, plural = RESOURCES[constant]
        work |= {(group, plural, "list"), (group, plural, "watch")}
    work.add(("", "events", "create"))  # kopf posts handler failures as Events
    if peering:
        plural = "kopfpeerings" if namespaced else "clusterkopfpeerings"
        # kopf watches the peering object and patches its keep-alive into it; the operator's
        # leadership check lists it.
        work |= {("kopf.dev", plural, verb) for verb in ("list", "watch", "patch")}
    discovery = {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }
    if namespaced:
        discovery |= {("", "namespaces", "list"), ("", "namespaces", "watch")}
    return work, discovery


def granted(role: dict[str, Any]) -> set[Permission]:
    permissions = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    permissions.add((group, resource, verb))
    return permissions


def roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return find(objects, "Role") + find(objects, "ClusterRole")


# --- the scanner sees the calls the chart's comment lists ---------------------------------------


def test_the_scanner_finds_the_operators_api_calls() -> None:
    calls = operator_calls()
    for expected in [
        ("SECRETS", "get"),  # integrations
        ("SECRETS", "create"),  # jobs, through JobRunner._create
        ("JOBS", "delete"),  # jobs, through JobRunner._delete_quietly
        ("PODS", "list"),
        ("SENSORRUNS/status", "patch"),
        ("SENSORS/status", "patch"),
        ("EVENTS", "create"),
        ("SENSORS", "list"),  # runtime.resync, through _list
        ("CLUSTER_PEERINGS", "list"),  # leadership, chosen at run time
    ]:
        assert expected in calls, expected
    assert kopf_watched() == {"SENSORS", "INTEGRATIONS"}


# --- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_no_wildcards(rendered: dict[str, list[dict[str, Any]]], mode: str) -> None:
    for role in roles(rendered[mode]):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], key)
                assert all("*" not in item for item in rule[key]), (role["metadata"]["name"], key)
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


@pytest.mark.parametrize("mode", ["default", "ha", "ingress", "metrics"])
def test_cluster_wide_rules_are_exactly_what_the_operator_uses(
    rendered: dict[str, list[dict[str, Any]]], mode: str
) -> None:
    objects = rendered[mode]
    assert not find(objects, "Role") and not find(objects, "RoleBinding")
    role = one(objects, "ClusterRole", "hiphops-operator")
    work, discovery = needed(namespaced=False)
    assert granted(role) == work | discovery
    binding = one(objects, "ClusterRoleBinding", "hiphops-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "hiphops-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hiphops-operator", "namespace": NAMESPACE}
    ]


def test_namespaced_rules_are_roles_in_the_watched_namespaces(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespaced"]
    work, discovery = needed(namespaced=True)
    namespaced_roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in namespaced_roles) == ["team-a", "team-b"]
    for role in namespaced_roles:
        assert granted(role) == work
    (cluster_role,) = find(objects, "ClusterRole")
    assert granted(cluster_role) == discovery
    assert all(verb in ("list", "watch") for _, _, verb in granted(cluster_role))
    bindings = find(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "hiphops-operator", "namespace": NAMESPACE}
        ]
    (cluster_binding,) = find(objects, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]


def test_without_peering_there_is_no_peering_permission(helm: Any) -> None:
    objects = helm.template({"operator": {"peering": {"enabled": False}}})
    work, discovery = needed(namespaced=False, peering=False)
    assert granted(one(objects, "ClusterRole", "hiphops-operator")) == work | discovery


def test_rbac_can_be_left_to_the_cluster_admin(helm: Any) -> None:
    objects = helm.template({"rbac": {"create": False}})
    assert not roles(objects)
    assert not find(objects, "RoleBinding") and not find(objects, "ClusterRoleBinding")


def test_the_chart_comment_lists_every_permission() -> None:
    """The table in operator-rbac.yaml names each resource the rules grant."""
    template = (ROOT / "charts/hiphops/templates/operator-rbac.yaml").read_text()
    comment = template.split("*/", 1)[0]
    work, discovery = needed(namespaced=True)
    for _, resource, verb in work | discovery:
        assert resource.split("/")[0] in comment, resource
        assert verb in comment


def test_operator_rules_render_from_one_definition() -> None:
    """Both install modes use the same rule list (templates/operator-rbac.yaml), so a rule added
    for one mode cannot be forgotten in the other."""
    template = (ROOT / "charts/hiphops/templates/operator-rbac.yaml").read_text()
    assert template.count('include "hiphops.operatorRules"') == 2
