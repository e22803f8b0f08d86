import base64

import pytest

from hiphops.integrations import (
    ChainedSecrets,
    EnvSecrets,
    IntegrationInvalid,
    ManifestSecrets,
    SecretRef,
    env_var_name,
    parse_integration,
)


def test_github_integration_with_rotation() -> None:
    integration = parse_integration(
        {
            "apiVersion": "hiphops.io/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "github", "namespace": "team-a"},
            "spec": {
                "type": "github",
                "github": {
                    "apiURL": "https://ghe.example.com/api/v3",
                    "appID": 12345,
                    "privateKeySecretRef": {"name": "gh-app", "key": "private-key.pem"},
                    "webhookSecretRefs": [
                        {"name": "gh-webhook", "key": "new"},
                        {"name": "gh-webhook", "key": "old"},
                    ],
                },
            },
        },
        default_project="default",
    )
    assert integration.key == ("team-a", "github")
    assert integration.app_id == "12345"
    assert integration.api_url == "https://ghe.example.com/api/v3"
    assert [r.key for r in integration.webhook_secrets] == ["new", "old"]
    assert integration.webhook_path == "/hooks/github/team-a/github"


def test_slack_integration_defaults() -> None:
    integration = parse_integration(
        {"metadata": {"name": "slack"}, "spec": {"type": "slack", "slack": {}}},
        default_project="p",
    )
    assert integration.api_url == "https://slack.com/api/"
    assert integration.webhook_secrets == ()
    assert integration.webhook_path == "/hooks/slack/p/slack"


def test_invalid_integrations() -> None:
    with pytest.raises(IntegrationInvalid, match=r"spec\.type: must be one of github, slack"):
        parse_integration(
            {"metadata": {"name": "x"}, "spec": {"type": "gitlab"}}, default_project="p"
        )
    with pytest.raises(IntegrationInvalid) as info:
        parse_integration(
            {
                "metadata": {"name": "X"},
                "spec": {"type": "slack", "github": {}, "slack": {"apiURL": "ftp://x"}},
            },
            default_project="p",
        )
    reasons = [str(p) for p in info.value.problems]
    assert "metadata.name: required: a DNS-1123 name" in reasons
    assert "spec.github: unknown field for a slack integration" in reasons
    assert "spec.slack.apiURL: must be an http(s) URL" in reasons


def test_secrets_from_manifests_and_environment() -> None:
    manifests = ManifestSecrets()
    errors = manifests.add_manifest(
        {
            "metadata": {"name": "s", "namespace": "p"},
            "data": {"a": base64.b64encode(b"from-data").decode(), "bad": "***"},
            "stringData": {"b": "from-string-data"},
        },
        default_project="default",
    )
    assert errors == ["data.bad: not valid base64"]
    assert manifests.get("p", SecretRef("s", "a")) == b"from-data"
    assert manifests.get("p", SecretRef("s", "b")) == b"from-string-data"
    assert manifests.get("other", SecretRef("s", "a")) is None

    ref = SecretRef("gh-webhook", "secret")
    assert env_var_name("team-a", ref) == "HIPHOPS_SECRET_TEAM_A_GH_WEBHOOK_SECRET"
    env = EnvSecrets({"HIPHOPS_SECRET_P_S_A": "from-env"})
    chained = ChainedSecrets([env, manifests])
    assert chained.get("p", SecretRef("s", "a")) == b"from-env"
    assert chained.get("p", SecretRef("s", "b")) == b"from-string-data"
    assert chained.get("p", SecretRef("s", "c")) is None
