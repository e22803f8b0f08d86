"""Benchmark one evaluation of a simple `$` expression over a ~25 KB pull_request event.

Run: .venv/bin/python -m bench.js_eval [--n 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from hiphops.js import compile_expression, encode_context

EXPRESSION = "event.pull_request.base.ref === 'main' && event.pull_request.additions < 500"
API = "https://api.github.com"


def _user(login: str, uid: int) -> dict[str, Any]:
    url = f"{API}/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": f"MDQ6VXNlcj{uid}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": url,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{url}/followers",
        "following_url": f"{url}/following{{/other_user}}",
        "gists_url": f"{url}/gists{{/gist_id}}",
        "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{url}/subscriptions",
        "organizations_url": f"{url}/orgs",
        "repos_url": f"{url}/repos",
        "events_url": f"{url}/events{{/privacy}}",
        "received_events_url": f"{url}/received_events",
        "type": "User",
        "user_view_type": "public",
        "site_admin": False,
    }


_REPO_LINKS = [
    "forks",
    "keys{/key_id}",
    "collaborators{/collaborator}",
    "teams",
    "hooks",
    "issues/events{/number}",
    "events",
    "assignees{/user}",
    "branches{/branch}",
    "tags",
    "git/refs{/sha}",
    "git/trees{/sha}",
    "statuses/{sha}",
    "languages",
    "stargazers",
    "contributors",
    "subscribers",
    "subscription",
    "commits{/sha}",
    "git/commits{/sha}",
    "comments{/number}",
    "issues/comments{/number}",
    "contents/{+path}",
    "compare/{base}...{head}",
    "merges",
    "{archive_format}{/ref}",
    "downloads",
    "issues{/number}",
    "pulls{/number}",
    "milestones{/number}",
    "notifications{?since,all,participating}",
    "labels{/name}",
    "releases{/id}",
    "deployments",
]


def _repo(owner: dict[str, Any], name: str, rid: int) -> dict[str, Any]:
    full = f"{owner['login']}/{name}"
    url = f"{API}/repos/{full}"
    repo: dict[str, Any] = {
        "id": rid,
        "node_id": f"MDEwOlJlcG9zaXRvcnk{rid}",
        "name": name,
        "full_name": full,
        "private": False,
        "owner": owner,
        "html_url": f"https://github.com/{full}",
        "description": "Event-driven automation for software delivery",
        "fork": False,
        "url": url,
    }
    for link in _REPO_LINKS:
        key = link.split("/")[0].split("{")[0] or "archive"
        repo[f"{key}_url"] = f"{url}/{link}"
    repo.update(
        {
            "created_at": "2024-01-05T10:00:00Z",
            "updated_at": "2024-06-01T12:00:00Z",
            "pushed_at": "2024-06-02T08:00:00Z",
            "git_url": f"git://github.com/{full}.git",
            "ssh_url": f"git@github.com:{full}.git",
            "clone_url": f"https://github.com/{full}.git",
            "svn_url": f"https://github.com/{full}",
            "homepage": None,
            "size": 1234,
            "stargazers_count": 42,
            "watchers_count": 42,
            "language": "Python",
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": False,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 3,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": 7,
            "license": {
                "key": "apache-2.0",
                "name": "Apache License 2.0",
                "spdx_id": "Apache-2.0",
                "url": f"{API}/licenses/apache-2.0",
                "node_id": "MDc6TGljZW5zZTI=",
            },
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": ["automation", "kubernetes", "webhooks"],
            "visibility": "public",
            "forks": 3,
            "open_issues": 7,
            "watchers": 42,
            "default_branch": "main",
            "allow_squash_merge": True,
            "allow_merge_commit": True,
            "allow_rebase_merge": True,
            "allow_auto_merge": False,
            "delete_branch_on_merge": False,
            "allow_update_branch": False,
            "use_squash_pr_title_as_default": False,
            "squash_merge_commit_message": "COMMIT_MESSAGES",
            "squash_merge_commit_title": "COMMIT_OR_PR_TITLE",
            "merge_commit_message": "PR_TITLE",
            "merge_commit_title": "MERGE_MESSAGE",
        }
    )
    return repo


def pull_request_event() -> dict[str, Any]:
    """A pull_request.opened payload shaped like GitHub's (about 25 KB of JSON)."""
    author = _user("dev-alice", 77001)
    assignee = _user("octocat", 583231)
    org = _user("acme", 9919) | {"type": "Organization"}
    base_repo = _repo(org, "widgets", 700001)
    number = 1347
    url = f"{API}/repos/acme/widgets/pulls/{number}"
    labels = ["enhancement", "needs-review", "area/notify"]
    pull_request = {
        "url": url,
        "id": 1934000001,
        "node_id": "PR_kwDOABCD",
        "html_url": f"https://github.com/acme/widgets/pull/{number}",
        "diff_url": f"https://github.com/acme/widgets/pull/{number}.diff",
        "patch_url": f"https://github.com/acme/widgets/pull/{number}.patch",
        "issue_url": f"{API}/repos/acme/widgets/issues/{number}",
        "number": number,
        "state": "open",
        "locked": False,
        "title": "Add retry with backoff to the Slack notifier",
        "user": author,
        "body": "This change adds retries.\n\n" + "Details about the change. " * 40,
        "created_at": "2024-06-02T08:00:00Z",
        "updated_at": "2024-06-02T09:00:00Z",
        "closed_at": None,
        "merged_at": None,
        "merge_commit_sha": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
        "assignee": assignee,
        "assignees": [assignee],
        "requested_reviewers": [_user("bob", 5002)],
        "requested_teams": [],
        "labels": [
            {
                "id": 1000 + i,
                "node_id": f"LA_kw{i}",
                "url": f"{API}/repos/acme/widgets/labels/{name}",
                "name": name,
                "color": "ededed",
                "default": False,
                "description": None,
            }
            for i, name in enumerate(labels)
        ],
        "milestone": None,
        "draft": False,
        "commits_url": f"{url}/commits",
        "review_comments_url": f"{url}/comments",
        "review_comment_url": f"{API}/repos/acme/widgets/pulls/comments{{/number}}",
        "comments_url": f"{API}/repos/acme/widgets/issues/{number}/comments",
        "statuses_url": f"{API}/repos/acme/widgets/statuses/ec26c3e57ca3a959ca5aad62de7213c5",
        "head": {
            "label": "dev-alice:retry",
            "ref": "retry",
            "sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            "user": author,
            "repo": _repo(author, "widgets", 700002),
        },
        "base": {
            "label": "acme:main",
            "ref": "main",
            "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            "user": org,
            "repo": base_repo,
        },
        "_links": {
            name: {"href": f"{url}/{name}"}
            for name in ("self", "html", "issue", "comments", "review_comments", "commits")
        },
        "author_association": "CONTRIBUTOR",
        "auto_merge": None,
        "active_lock_reason": None,
        "merged": False,
        "mergeable": None,
        "rebaseable": None,
        "mergeable_state": "unknown",
        "merged_by": None,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": True,
        "commits": 3,
        "additions": 120,
        "deletions": 14,
        "changed_files": 5,
    }
    return {
        "action": "opened",
        "number": number,
        "pull_request": pull_request,
        "repository": base_repo,
        "organization": {"login": "acme", "id": 9919, "url": f"{API}/orgs/acme"},
        "sender": author,
        "installation": {"id": 123456, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMTIzNDU2"},
    }


def _measure(call: Callable[[], object], n: int) -> tuple[float, float]:
    """Median and 99th percentile of one call, in microseconds."""
    for _ in range(min(n, 200)):
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[min(n - 1, int(n * 0.99))]


def main() -> None:
    """Print median and p99 timings for plain-dict and EncodedContext evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="evaluations per measurement")
    args = parser.parse_args()

    context = {
        "event": pull_request_event(),
        "tasks": {"build": {"state": "COMPLETE", "result": {"ok": True}}},
        "vars": {"environment": "production"},
        "run": {"name": "pr-1347", "sensor": "review", "started": "2024-06-02T09:00:01Z"},
    }
    size = len(json.dumps(context))
    expression = compile_expression(EXPRESSION)
    encoded = encode_context(context)
    assert expression.evaluate(context) is True and expression.evaluate(encoded) is True

    print(f"expression: {EXPRESSION}")
    print(f"context: {size / 1024:.1f} KiB of JSON, {args.n} evaluations per row")
    rows = [
        ("evaluate(dict)", lambda: expression.evaluate(context)),
        ("evaluate(EncodedContext)", lambda: expression.evaluate(encoded)),
        ("truthy(EncodedContext)", lambda: expression.truthy(encoded)),
        ("encode_context(dict)", lambda: encode_context(context)),
    ]
    for name, call in rows:
        median, p99 = _measure(call, args.n)
        print(f"{name:<26} median {median:7.0f} µs   p99 {p99:7.0f} µs")


if __name__ == "__main__":
    main()
