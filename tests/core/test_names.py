"""Table and property tests for the model-name parser (in the style of Ollama's `name_test.go`)."""

from __future__ import annotations

import dataclasses
import posixpath
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from modelhangar.core.errors import HangarError
from modelhangar.core.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    NAME_PATTERN,
    InvalidName,
    ModelName,
    display_stored,
    is_valid_name,
    is_valid_part,
    parse_name,
    parse_name_from_filepath,
)

H, NS, T = DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG
HEX = "e8a35b5937a5e6d5c35d1f2a15f161e07eefe5e5bb0a3cdd42998ee79b057730"

# Independent restatement of Ollama's `isValidPart` rules, used as the oracle for property tests.
HOST_RE = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"
NAMESPACE_RE = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"
MODEL_RE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
TAG_RE = MODEL_RE

# (input, (host, namespace, model, tag, scheme)) — or None when the input must be rejected.
Expected = tuple[str, str, str, str, str | None] | None
CASES: list[tuple[str, Expected]] = [
    # defaults
    ("llama3.2", (H, NS, "llama3.2", T, None)),
    ("llama3.2:1b", (H, NS, "llama3.2", "1b", None)),
    ("mistral:7b-instruct-q4_K_M", (H, NS, "mistral", "7b-instruct-q4_K_M", None)),
    ("user/model:tag", (H, "user", "model", "tag", None)),
    ("user/model", (H, "user", "model", T, None)),
    ("host/ns/model:tag", ("host", "ns", "model", "tag", None)),
    ("host/ns/model", ("host", "ns", "model", T, None)),
    ("example.com/eva/mistral:7b", ("example.com", "eva", "mistral", "7b", None)),
    ("registry.ollama.ai/library/m:latest", (H, NS, "m", T, None)),
    ("_why/_the/_lucky:_stiff", ("_why", "_the", "_lucky", "_stiff", None)),
    ("0/1/2:3", ("0", "1", "2", "3", None)),
    ("Mistral:Latest", (H, NS, "Mistral", "Latest", None)),
    ("REGISTRY.OLLAMA.AI/Library/M:T", ("REGISTRY.OLLAMA.AI", "Library", "M", "T", None)),
    ("a-b_c.d:e-f_g.h", (H, NS, "a-b_c.d", "e-f_g.h", None)),
    ("a..b", (H, NS, "a..b", T, None)),
    ("m.", (H, NS, "m.", T, None)),
    ("m:1.", (H, NS, "m", "1.", None)),
    ("h.a.b/ns/m", ("h.a.b", "ns", "m", T, None)),
    ("h-1_2/ns-1_2/m", ("h-1_2", "ns-1_2", "m", T, None)),
    # ports
    ("host:5000/ns/model", ("host:5000", "ns", "model", T, None)),
    ("host:5000/ns/model:tag", ("host:5000", "ns", "model", "tag", None)),
    ("localhost:11434/library/m:t", ("localhost:11434", NS, "m", "t", None)),
    ("127.0.0.1:5000/ns/m", ("127.0.0.1:5000", "ns", "m", T, None)),
    ("h:5000/m", None),  # only two segments: "h:5000" is the namespace, and ':' is not allowed there
    # schemes (only stripped off the host segment, as in Ollama)
    ("http://host:5000/ns/model:tag", ("host:5000", "ns", "model", "tag", "http")),
    ("https://registry.ollama.ai/library/m", (H, NS, "m", T, "https")),
    ("http://h/ns/m", ("h", "ns", "m", T, "http")),
    ("http://ns/m", None),
    ("http://m", None),
    ("http://m:t", None),
    ("://h/ns/m", None),
    ("x:///ns/m", None),
    ("h t t p://h/ns/m", None),
    ("1http://h/ns/m", None),
    ("http://https://h/ns/m", None),
    ("http:/h/ns/m", None),
    # part lengths
    ("m" * 80, (H, NS, "m" * 80, T, None)),
    ("m" * 81, None),
    ("n" * 80 + "/m", (H, "n" * 80, "m", T, None)),
    ("n" * 81 + "/m", None),
    ("m:" + "t" * 80, (H, NS, "m", "t" * 80, None)),
    ("m:" + "t" * 81, None),
    ("h" * 350 + "/ns/m", ("h" * 350, "ns", "m", T, None)),
    ("h" * 351 + "/ns/m", None),
    # digest-looking names
    ("sha256:" + HEX, (H, NS, "sha256", HEX, None)),
    ("sha256-" + HEX, (H, NS, "sha256-" + HEX, T, None)),
    ("m@sha256:" + HEX, None),
    ("m:t@sha256:" + HEX, None),
    ("@sha256:" + HEX, None),
    ("m@x", None),
    # empty and promised-but-empty parts
    ("", None),
    (" ", None),
    ("\t", None),
    ("\n", None),
    (":", None),
    ("/", None),
    ("//", None),
    ("m:", None),
    (":t", None),
    ("/m", None),
    ("ns/", None),
    ("ns//m", None),
    ("h//m", None),
    ("//m", None),
    ("h/ns/", None),
    ("/ns/m", None),
    ("h/ns/m:", None),
    # too many segments
    ("a/b/c/d", None),
    ("a/b/c/d:t", None),
    ("h/ns/m/t", None),
    # bad characters and positions
    ("h/n.s/m", None),
    ("n.s/m", None),
    ("host/name:space/model:tag", None),
    ("m:t/x", None),
    ("a:b:c", None),
    ("-m", None),
    (".m", None),
    ("ns/-m", None),
    ("-ns/m", None),
    ("m:-t", None),
    ("m:.t", None),
    ("-h/ns/m", None),
    (".h/ns/m", None),
    (":h/ns/m", None),
    ("m+q4", None),
    ("m#t", None),
    ("m?t", None),
    ("m*", None),
    ("*", None),
    ("m t", None),
    ("~/m", None),
    ("$HOME/m", None),
    ("m;rm -rf", None),
    ("m'", None),
    ('m"', None),
    # whitespace and control characters
    (" m", None),
    ("m ", None),
    ("m\n", None),
    ("m\r\n", None),
    ("m\x00", None),
    ("m\x00/../x", None),
    ("ns/m\x00:t", None),
    ("m:\tt", None),
    # traversal attempts
    ("..", None),
    (".", None),
    ("../x", None),
    ("x/../y", None),
    ("../../etc/passwd", None),
    ("x/..", None),
    ("x/y/..", None),
    ("../ns/m", None),
    ("..:t", None),
    ("m:..", None),
    ("%2e%2e", None),
    ("%2e%2e/m", None),
    ("..%2fx", None),
    ("m\\x", None),
    ("..\\x", None),
    ("h\\ns/x/m", None),
    ("/etc/passwd", None),
    # unicode
    ("naïve", None),
    ("模型", None),
    ("ｍ", None),
    ("١٢٣", None),
    ("m\u200b", None),
    ("m:tag\u00a0", None),
    ("ℌ/ns/m", None),
]


def _parts(n: ModelName) -> tuple[str, str, str, str, str | None]:
    return (n.host, n.namespace, n.model, n.tag, n.scheme)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES), "duplicate rows"


@pytest.mark.parametrize(("raw", "want"), CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_parse_table(raw: str, want: Expected) -> None:
    if want is None:
        with pytest.raises(InvalidName) as info:
            parse_name(raw)
        assert info.value.raw == raw
        assert str(info.value) == "invalid model name"
        assert not is_valid_name(raw)
    else:
        assert _parts(parse_name(raw)) == want
        assert is_valid_name(raw)


def test_invalid_name_is_a_value_error_and_a_hangar_error() -> None:
    with pytest.raises(ValueError):
        parse_name("a/b/c/d")
    with pytest.raises(HangarError):
        parse_name("")


def test_non_string_is_invalid() -> None:
    for bad in (None, 3, b"m", ["m"]):
        with pytest.raises(InvalidName):
            parse_name(bad)  # type: ignore[arg-type]
        assert not is_valid_name(bad)  # type: ignore[arg-type]


def test_reason_says_what_failed() -> None:
    with pytest.raises(InvalidName) as info:
        parse_name("n.s/m")
    assert info.value.reason == "invalid namespace"
    with pytest.raises(InvalidName) as info:
        parse_name("m:")
    assert info.value.reason == "empty tag"


@pytest.mark.parametrize(
    ("raw", "shortest", "long", "repository"),
    [
        ("llama3.2", "llama3.2:latest", f"{H}/{NS}/llama3.2:latest", f"{H}/{NS}/llama3.2"),
        ("llama3.2:1b", "llama3.2:1b", f"{H}/{NS}/llama3.2:1b", f"{H}/{NS}/llama3.2"),
        ("user/model:tag", "user/model:tag", f"{H}/user/model:tag", f"{H}/user/model"),
        ("host/ns/model:tag", "host/ns/model:tag", "host/ns/model:tag", "host/ns/model"),
        ("host/library/m:t", "host/library/m:t", "host/library/m:t", "host/library/m"),
        (
            "REGISTRY.ollama.ai/LIBRARY/M:T",
            "M:T",
            "REGISTRY.ollama.ai/LIBRARY/M:T",
            "REGISTRY.ollama.ai/LIBRARY/M",
        ),
        ("registry.ollama.ai/Eva/m", "Eva/m:latest", f"{H}/Eva/m:latest", f"{H}/Eva/m"),
        ("http://h:5000/ns/m:t", "h:5000/ns/m:t", "h:5000/ns/m:t", "h:5000/ns/m"),
        ("sha256:" + HEX, "sha256:" + HEX, f"{H}/{NS}/sha256:{HEX}", f"{H}/{NS}/sha256"),
    ],
)
def test_display(raw: str, shortest: str, long: str, repository: str) -> None:
    n = parse_name(raw)
    assert n.display_shortest() == shortest
    assert n.display_long() == long
    assert str(n) == long
    assert n.repository == repository


def test_key_is_case_insensitive_but_equality_is_not() -> None:
    a, b = parse_name("Mistral:Latest"), parse_name("mistral:latest")
    assert a != b
    assert a.key() == b.key() == (H, NS, "mistral", "latest")
    assert parse_name("REGISTRY.OLLAMA.AI/Library/m").key() == parse_name("m").key()


def test_scheme_is_kept_but_not_compared() -> None:
    a, b = parse_name("http://h/ns/m:t"), parse_name("h/ns/m:t")
    assert a.scheme == "http"
    assert b.scheme is None
    assert a == b
    assert hash(a) == hash(b)


def test_model_name_is_frozen() -> None:
    n = parse_name("m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.tag = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "parts",
    [("", NS, "m", T), (H, "n.s", "m", T), (H, NS, "..", T), (H, NS, "m", "a/b"), ("a/b", NS, "m", T)],
)
def test_constructor_validates(parts: tuple[str, str, str, str]) -> None:
    with pytest.raises(InvalidName):
        ModelName(*parts)
    with pytest.raises(InvalidName):
        dataclasses.replace(parse_name("m"), tag=parts[3], model=parts[2], namespace=parts[1], host=parts[0])


def test_constructor_validates_scheme() -> None:
    with pytest.raises(InvalidName):
        ModelName(H, NS, "m", T, scheme="")
    assert ModelName(H, NS, "m", T, scheme="https").scheme == "https"


def test_filepath_parts_and_back() -> None:
    n = parse_name("host:5000/ns/Model:Tag")
    assert n.filepath_parts() == ("host:5000", "ns", "Model", "Tag")
    assert parse_name_from_filepath(n.filepath_parts()) == n
    assert parse_name_from_filepath([H, NS, "m", T]) == parse_name("m")


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [H, NS, "m"],
        [H, NS, "m", T, "x"],
        [H, NS, "..", T],
        [H, "..", "m", T],
        ["..", NS, "m", T],
        [H, NS, "m", ".."],
        [H, NS, "m", ""],
        [H, "n.s", "m", T],
        ["a/b", NS, "m", T],
        [H, NS, "m", "t\x00"],
    ],
)
def test_parse_name_from_filepath_rejects(parts: list[str]) -> None:
    with pytest.raises(InvalidName):
        parse_name_from_filepath(parts)


def test_parse_name_from_filepath_refuses_a_string() -> None:
    with pytest.raises(TypeError):
        parse_name_from_filepath("abcd")


@pytest.mark.parametrize(
    ("kind", "part", "ok"),
    [
        ("host", "h:5000", True),
        ("namespace", "h:5000", False),
        ("namespace", "a.b", False),
        ("model", "a.b", True),
        ("tag", "a.b", True),
        ("tag", "a:b", False),
        ("model", "..", False),
        ("host", "..", False),
        ("host", "h" * 350, True),
        ("host", "h" * 351, False),
        ("model", "", False),
    ],
)
def test_is_valid_part(kind: str, part: str, ok: bool) -> None:
    assert is_valid_part(kind, part) is ok  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

_ALPHABET = "aZ09_-.:/\\@%+ \t\n\x00é模"
_name_like = st.text(alphabet=_ALPHABET, max_size=40)
_any_text = st.one_of(st.text(max_size=60), _name_like)


def _assert_safe(n: ModelName) -> None:
    for pattern, part in zip((HOST_RE, NAMESPACE_RE, MODEL_RE, TAG_RE), n.filepath_parts(), strict=True):
        assert re.fullmatch(pattern, part), part
        assert "/" not in part
        assert "\\" not in part
        assert "\x00" not in part
        assert part.strip(".") != ""
        assert part.isascii()
    root = "/models/manifests"
    joined = posixpath.normpath(posixpath.join(root, *n.filepath_parts()))
    assert joined.startswith(root + "/")
    assert joined.count("/") == root.count("/") + 4


@given(_any_text)
@example("..")
@example("../x")
@example("x/../y")
@example("a/b/c/d")
@example("http://../x/m")
def test_parse_never_returns_an_unsafe_name(s: str) -> None:
    try:
        n = parse_name(s)
    except InvalidName as exc:
        assert exc.raw == s
        assert not is_valid_name(s)
        return
    assert is_valid_name(s)
    _assert_safe(n)


_hosts = st.from_regex(HOST_RE, fullmatch=True)
_namespaces = st.from_regex(NAMESPACE_RE, fullmatch=True)
_models = st.from_regex(MODEL_RE, fullmatch=True)
_tags = st.from_regex(TAG_RE, fullmatch=True)
_names = st.builds(ModelName, _hosts, _namespaces, _models, _tags)


@given(_names)
def test_round_trip_through_display_forms(n: ModelName) -> None:
    assert parse_name(n.display_long()) == n
    assert parse_name(n.display_shortest()).key() == n.key()
    assert parse_name_from_filepath(n.filepath_parts()) == n
    assert parse_name("https://" + n.display_long()) == n


@given(st.one_of(_names.map(ModelName.display_long), _names.map(ModelName.display_shortest), _any_text))
def test_parse_is_idempotent_on_display_forms(s: str) -> None:
    try:
        n = parse_name(s)
    except InvalidName:
        return
    for form in (n.display_long(), n.display_shortest()):
        again = parse_name(form)
        assert again.key() == n.key()
        assert parse_name(again.display_long()) == again
        assert parse_name(again.display_shortest()).display_shortest() == again.display_shortest()
    assert parse_name(n.display_long()) == n


@given(_hosts, _namespaces, _models, _tags)
def test_every_spelling_of_a_valid_name_parses(host: str, namespace: str, model: str, tag: str) -> None:
    assert parse_name(f"{host}/{namespace}/{model}:{tag}") == ModelName(host, namespace, model, tag)
    assert parse_name(f"{host}/{namespace}/{model}") == ModelName(host, namespace, model, T)
    assert parse_name(f"{namespace}/{model}:{tag}") == ModelName(H, namespace, model, tag)
    assert parse_name(f"{model}:{tag}") == ModelName(H, NS, model, tag)
    assert parse_name(model) == ModelName(H, NS, model, T)


@given(st.one_of(_names.map(lambda n: (n.repository, n.tag)), st.tuples(_name_like, _name_like)))
@example(("registry.ollama.ai/library/m", "latest"))
@example(("REGISTRY.ollama.ai/Library/m", "v1"))
@example(("host:5000/ns/m", "v1"))
@example(("library/m", "latest"))
@example(("a/b/c/d", "t"))
@example(("h/n/m", ""))
def test_display_stored_agrees_with_parse_name(stored: tuple[str, str]) -> None:
    repository, tag = stored
    try:
        n = parse_name(f"{repository}:{tag}")
        want = n.display_shortest() if (n.repository, n.tag) == (repository, tag) else None
    except InvalidName:
        want = None
    assert display_stored(repository, tag) == want


@given(st.from_regex(NAME_PATTERN, fullmatch=True))
def test_whatever_the_schema_pattern_admits_parses(raw: str) -> None:
    """The OpenAPI schema's name pattern is never looser than the parser."""
    parse_name(raw)
