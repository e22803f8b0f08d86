import pytest

from hiphops.globs import GlobError, compile_glob, is_literal, literal_text


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("main", "main", True),
        ("main", "mainline", False),
        ("main", "xmain", False),
        ("releases/*", "releases/v1", True),
        ("releases/*", "releases/v1/hotfix", False),
        ("releases/**", "releases/v1/hotfix", True),
        ("releases/**", "releases/", True),
        ("*", "feature/x", False),
        ("**", "feature/x", True),
        ("**", "", True),
        ("*", "", True),
        ("feature-?", "feature-a", True),
        ("feature-?", "feature-ab", False),
        ("feature-?", "feature-/", False),
        ("v[0-9].*", "v1.2", True),
        ("v[0-9].*", "va.2", False),
        ("[!a]bc", "xbc", True),
        ("[!a]bc", "abc", False),
        ("**/*.md", "docs/a/readme.md", True),
        ("**/*.md", "readme.md", False),
        ("*.md", "readme.md", True),
        ("\\*", "*", True),
        ("\\*", "x", False),
        ("a.b", "axb", False),
        ("(x)+", "(x)+", True),
        ("dependabot[bot]", "dependabott", True),
        ("dependabot[bot]", "dependabot[bot]", False),
        ("dependabot\\[bot\\]", "dependabot[bot]", True),
    ],
)
def test_glob_semantics(pattern: str, value: str, expected: bool) -> None:
    assert compile_glob(pattern)(value) is expected


def test_literal_detection() -> None:
    assert is_literal("main")
    assert is_literal("dependabot\\[bot\\]")
    assert literal_text("dependabot\\[bot\\]") == "dependabot[bot]"
    assert not is_literal("main*")
    assert not is_literal("v[12]")
    assert not is_literal("a?")


@pytest.mark.parametrize("pattern", ["[abc", "abc\\", "[]"])
def test_malformed_patterns_raise(pattern: str) -> None:
    with pytest.raises(GlobError):
        compile_glob(pattern)
