from pathlib import Path

from hiphops.loader import load

HIPHOPS_FORM = """\
resource: sensor
id: Auto merge
when:
  event.hiphops.event: pull_request
tasks:
  - name: github.merge_pr
    input:
      (path)repo: event.repo_name
---
resource: sensor
id: second
tasks:
  - name: slack.post_message
"""

MANIFEST_FORM = """\
apiVersion: hiphops.io/v1alpha1
kind: Sensor
metadata: {name: auto-merge, namespace: team-a}
spec:
  id: Auto merge
  when:
    event.hiphops.event: pull_request
  tasks:
    - name: github.merge_pr
      input:
        (path)repo: event.repo_name
---
apiVersion: hiphops.io/v1alpha1
kind: Integration
metadata: {name: github, namespace: team-a}
spec: {type: github}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_both_forms_give_the_same_model(tmp_path: Path) -> None:
    a = load([str(write(tmp_path, "a.yaml", HIPHOPS_FORM))], default_project="team-a")
    b = load([str(write(tmp_path, "b.yml", MANIFEST_FORM))])
    assert a.errors == [] and b.errors == []
    first, second = (s for _, s in a.sensors)
    manifest_sensor = b.sensors[0][1]
    assert (first.key, first.id) == (("team-a", "auto-merge"), "Auto merge")
    assert (manifest_sensor.key, manifest_sensor.id) == (("team-a", "auto-merge"), "Auto merge")
    assert first.spec == manifest_sensor.spec
    assert second.name == "second"
    assert [m.kind for m in b.manifests] == ["Integration"]


def test_folders_are_searched_recursively(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "a.yaml", HIPHOPS_FORM)
    write(tmp_path, "notes.txt", "not yaml")
    result = load([str(tmp_path)])
    assert len(result.sensors) == 2


def test_every_error_names_file_document_sensor_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """\
resource: sensor
id: fine
tasks: [{name: github.merge_pr}]
---
resource: sensor
id: broken
when:
  event.x: {a: 1}
tasks:
  - name: github.merge_pr
    wen: {}
    input:
      (expr)n: "event.("
---
resource: trigger
id: x
---
just: a map
""",
    )
    result = load([str(path)])
    lines = [str(p) for p in result.errors]
    assert lines == [
        f'{path}: document 2 (sensor "broken"): when.event.x: a map is not a pattern: '
        "expected a string or a list of strings",
        f'{path}: document 2 (sensor "broken"): tasks[0].wen: unknown task field '
        "(known: name, id, when, depends, input)",
        f'{path}: document 2 (sensor "broken"): tasks[0].input.(expr)n: JavaScript does not '
        f"compile: {lines[2].split('compile: ', 1)[1]}",
        f"{path}: document 3: resource: unknown resource 'trigger'",
        f"{path}: document 4: not a sensor: expected `resource: sensor` (Hiphops form) or "
        "`apiVersion: hiphops.io/v1alpha1` with `kind: Sensor`",
    ]
    assert [s.name for _, s in result.sensors] == ["fine"]


def test_yaml_errors_and_duplicate_keys_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dup.yaml",
        "resource: sensor\nid: a\nwhen:\n  event.x: a\n  event.x: b\ntasks: [{name: a.b}]\n",
    )
    [problem] = load([str(path)]).errors
    assert "document 1: invalid YAML: line 5, column 3: found duplicate key 'event.x'" in str(
        problem
    )
    broken = write(tmp_path, "broken.yaml", "resource: sensor\nid: [unclosed\n")
    [problem] = load([str(broken)]).errors
    assert "invalid YAML: line 3" in str(problem)


def test_duplicate_sensor_names_in_a_project(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", HIPHOPS_FORM)
    result = load([str(path), str(path)])
    assert "duplicate sensor name 'auto-merge'" in str(result.errors[0])


def test_wrong_api_version_and_missing_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "v.yaml",
        "apiVersion: hiphops.io/v2\nkind: Sensor\nmetadata: {name: a}\nspec: {tasks: []}\n",
    )
    result = load([str(path), str(tmp_path / "nope.yaml")])
    reasons = [str(p) for p in result.errors]
    assert "apiVersion: 'hiphops.io/v2' (expected hiphops.io/v1alpha1)" in reasons[0]
    assert "cannot read" in reasons[1]


def test_integrations_are_checked_and_unknown_kinds_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "i.yaml",
        """\
apiVersion: hiphops.io/v1alpha1
kind: Integration
metadata: {name: gh, namespace: team-a}
spec:
  type: github
  github:
    webhookSecretRefs: [{name: gh-webhook}]
    appID: "1"
    extra: true
---
apiVersion: hiphops.io/v1alpha1
kind: Sensr
metadata: {name: x}
---
apiVersion: v1
kind: Secret
metadata: {name: gh-webhook}
stringData: {secret: s}
""",
    )
    result = load([str(path)])
    reasons = [str(p) for p in result.errors]
    assert reasons == [
        f"{path}: document 1 (integration gh): spec.github.extra: unknown field "
        "(known: apiURL, appID, privateKeySecretRef, tokenSecretRef, webhookSecretRefs)",
        f"{path}: document 1 (integration gh): spec.github: a GitHub App needs both `appID` and "
        "`privateKeySecretRef`",
        f"{path}: document 1 (integration gh): spec.github.webhookSecretRefs[0]: a secret "
        "reference needs a non-empty `name` and `key`",
        f"{path}: document 2: kind: 'Sensr' (known: Sensor, Integration, SensorRun)",
    ]
    assert [m.kind for m in result.manifests] == ["Integration", "Secret"]
