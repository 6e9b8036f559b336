"""Go's filepath.Clean and filepath.Join on Unix (shimctl.node.gopath).

The tables are Go's own: cleantests, nonwincleantests, jointests and nonwinjointests in
https://github.com/golang/go/blob/go1.22.0/src/path/filepath/path_test.go. A shim hashes
filepath.Join(address, namespace, id) into its socket name, so every case matters.
"""

from __future__ import annotations

import posixpath

import pytest

from shimctl.node.gopath import go_clean, go_join

CLEAN = [
    # Already clean
    ("abc", "abc"),
    ("abc/def", "abc/def"),
    ("a/b/c", "a/b/c"),
    (".", "."),
    ("..", ".."),
    ("../..", "../.."),
    ("../../abc", "../../abc"),
    ("/abc", "/abc"),
    ("/", "/"),
    # Empty is current dir
    ("", "."),
    # Remove trailing slash
    ("abc/", "abc"),
    ("abc/def/", "abc/def"),
    ("a/b/c/", "a/b/c"),
    ("./", "."),
    ("../", ".."),
    ("../../", "../.."),
    ("/abc/", "/abc"),
    # Remove doubled slash
    ("abc//def//ghi", "abc/def/ghi"),
    ("abc//", "abc"),
    # Remove . elements
    ("abc/./def", "abc/def"),
    ("/./abc/def", "/abc/def"),
    ("abc/.", "abc"),
    # Remove .. elements
    ("abc/def/ghi/../jkl", "abc/def/jkl"),
    ("abc/def/../ghi/../jkl", "abc/jkl"),
    ("abc/def/..", "abc"),
    ("abc/def/../..", "."),
    ("/abc/def/../..", "/"),
    ("abc/def/../../..", ".."),
    ("/abc/def/../../..", "/"),
    ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
    ("/../abc", "/abc"),
    ("a/../b:/../../c", "../c"),
    # Combinations
    ("abc/./../def", "def"),
    ("abc//./../def", "def"),
    ("abc/../../././../def", "../../def"),
    # Remove leading doubled slash (nonwincleantests)
    ("//abc", "/abc"),
    ("///abc", "/abc"),
    ("//abc//", "/abc"),
]

JOIN = [
    # zero parameters
    ((), ""),
    # one parameter
    (("",), ""),
    (("/",), "/"),
    (("a",), "a"),
    # two parameters
    (("a", "b"), "a/b"),
    (("a", ""), "a"),
    (("", "b"), "b"),
    (("/", "a"), "/a"),
    (("/", "a/b"), "/a/b"),
    (("/", ""), "/"),
    (("/a", "b"), "/a/b"),
    (("a", "/b"), "a/b"),
    (("/a", "/b"), "/a/b"),
    (("a/", "b"), "a/b"),
    (("a/", ""), "a"),
    (("", ""), ""),
    # three parameters
    (("/", "a", "b"), "/a/b"),
    # nonwinjointests
    (("//", "a"), "/a"),
]


@pytest.mark.parametrize(("path", "cleaned"), CLEAN)
def test_clean(path: str, cleaned: str) -> None:
    assert go_clean(path) == cleaned
    assert go_clean(cleaned) == cleaned  # Go's test: Clean is idempotent


@pytest.mark.parametrize(("elements", "joined"), JOIN)
def test_join(elements: tuple[str, ...], joined: str) -> None:
    assert go_join(*elements) == joined


def test_a_leading_double_slash_is_where_normpath_differs() -> None:
    """The case that made shimctl derive another socket than the shim: POSIX keeps `//`."""
    assert posixpath.normpath("//run/containerd/containerd.sock/default/c1") == (
        "//run/containerd/containerd.sock/default/c1"
    )
    assert go_join("//run/containerd/containerd.sock", "default", "c1") == (
        "/run/containerd/containerd.sock/default/c1"
    )
