"""One authority per parameter rule: the CLI (``--set`` and ``--params`` through the resolver,
as ``run`` and ``plan`` do) and the TUI's field check accept and refuse exactly the same
values.

The property test drives both real entry points on the same generated values; the table
pins the cases the two used to disagree on (issue 14), each decided once (the "Parameter
rules" section of docs/runbook-format.md says which way and why).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elematrix_tui import cli
from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.model import Param, Runbook
from elematrix_tui.engine.params import FALSE_WORDS, TRUE_WORDS, coerce, truthy
from elematrix_tui.engine.resolve import StoredParams, resolve_params
from elematrix_tui.ui import validation


def _runbook(param: Param) -> Runbook:
    return Runbook.model_validate({
        "runbook": "rules", "params": [param.model_dump(exclude_none=True)],
        "phases": [{"id": "one", "steps": [{"id": "s", "action": "local.noop"}]}]})


def cli_verdict(param: Param, raw: str) -> tuple[bool, Any]:
    """What `elematrix run/plan RUNBOOK --set p=RAW` decides: parsed by the CLI's own
    option parser and --set reader, then resolved by the engine's one resolver."""
    rb = _runbook(param)
    args = cli.build_parser().parse_args(["plan", "rules", "--deployment", "d",
                                          "--set", f"{param.name}={raw}"])
    try:
        given = cli._params(args, rb)
    except InputError:
        return False, None
    res = resolve_params(rb, given, deployment="d", stored=StoredParams(),
                         secret=lambda name: None)
    return not res.errors, res.values.get(param.name)


def params_file_verdict(param: Param, raw: str, folder: Path) -> tuple[bool, Any]:
    """What `elematrix run/plan RUNBOOK --params FILE.yaml` decides for ``p: RAW`` (a quoted
    YAML string; secrets never go in a file)."""
    rb = _runbook(param)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({param.name: raw}, allow_unicode=True))
    args = cli.build_parser().parse_args(["plan", "rules", "--deployment", "d",
                                          "--params", str(path)])
    try:
        given = cli._params(args, rb)
    except InputError:
        return False, None
    res = resolve_params(rb, given, deployment="d", stored=StoredParams(),
                         secret=lambda name: None)
    return not res.errors, res.values.get(param.name)


def tui_verdict(param: Param, raw: str) -> tuple[bool, Any]:
    """What the parameter form decides for a field holding RAW."""
    if validation.check(param, raw) is not None:
        return False, None
    return True, validation.convert(param, raw)


@st.composite
def params(draw: st.DrawFn) -> Param:
    t = draw(st.sampled_from(["string", "int", "bool", "choice", "cidr", "email", "hostname",
                              "secret"]))
    spec: dict[str, Any] = {"name": "p", "type": t}
    if t in ("string", "hostname", "email", "choice"):
        spec["pattern"] = draw(st.sampled_from(
            [None, "[a-z]+", "^[a-z0-9.-]+$", "/[a-z/]+", "t3\\..*", ".*org"]))
    if t in ("int", "string", "secret", "hostname", "email"):
        lo = draw(st.none() | st.integers(0, 20))
        hi = draw(st.none() | st.integers(lo or 0, 40))
        spec.update(min=lo, max=hi)
    if t == "choice":
        spec["choices"] = draw(st.lists(st.sampled_from(["t3.medium", "t3.large", "a", "Y"]),
                                        min_size=1, max_size=3, unique=True))
    if t == "secret":
        spec["generate"] = draw(st.none() | st.integers(16, 40))
    return Param.model_validate({k: v for k, v in spec.items() if v is not None})


_space = st.sampled_from(["", " ", "\n", "\t", "  "])
_octet = st.integers(0, 255).map(str)
_ipv4 = st.tuples(_octet, _octet, _octet, _octet).map(".".join)
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)
_words = sorted(TRUE_WORDS | FALSE_WORDS | {"maybe", "True", "NO", "Y", "nope", "2"})
raw_values = st.tuples(_space, st.one_of(
    st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
            max_size=30),
    st.integers(-5, 70000).map(str),
    st.sampled_from(_words),
    st.tuples(_ipv4, st.integers(0, 40)).map(lambda t: f"{t[0]}/{t[1]}"),
    _ipv4,
    st.sampled_from(["2001:db8::/64", "2001:db8::1/64", "::/0", "::1/128", "fe80::/10"]),
    _host,
    st.tuples(_host, st.integers(-1, 70000)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(_label, _host).map(lambda t: f"{t[0]}@{t[1]}"),
    st.sampled_from(["t3.medium", "t3.large", "a", "/opt/x", "//", string.ascii_letters]),
), _space).map("".join).filter(lambda s: s != "")


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(param=params(), raw=raw_values)
def test_cli_and_tui_accept_and_refuse_the_same_values(param: Param, raw: str,
                                                      tmp_path_factory: Any) -> None:
    cli_ok, cli_value = cli_verdict(param, raw)
    tui_ok, tui_value = tui_verdict(param, raw)
    assert cli_ok == tui_ok, (param, raw, validation.check(param, raw))
    if param.type != "secret":
        folder = tmp_path_factory.mktemp("p", numbered=True)
        assert params_file_verdict(param, raw, folder) == (cli_ok, cli_value), (param, raw)
    if cli_ok:
        # The value the form hands the engine is the value the CLI gets, and the engine
        # takes it again unchanged (the runner resolves what the form collected).
        assert tui_value == cli_value
        assert coerce(param, tui_value) == cli_value


@pytest.mark.parametrize(("spec", "raw", "ok"), [
    # cidr: host bits are refused, never widened to the whole network.
    ({"type": "cidr"}, "10.0.0.1/24", False),
    ({"type": "cidr"}, "10.0.0.0/24", True),
    ({"type": "cidr"}, "203.0.113.7/32", True),
    ({"type": "cidr"}, "203.0.113.7", False),
    # hostname: a port is allowed (a Matrix server name may carry one); a trailing dot not.
    ({"type": "hostname"}, "host:8448", True),
    ({"type": "hostname"}, "host:0", False),
    ({"type": "hostname"}, "matrix.example.org.", False),
    # pattern: the whole value, never a prefix or a search hit.
    ({"type": "string", "pattern": "[a-z]+"}, "abc1", False),
    ({"type": "string", "pattern": "^/[a-z/]+$"}, "//\n", False),
    ({"type": "email"}, "ops@example.org\n", True),  # trimmed: an e-mail holds no spaces
    ({"type": "email"}, "ops@example.org x", False),
    # min/max on text types bound the length.
    ({"type": "string", "min": 3}, "ab", False),
    ({"type": "string", "max": 3}, "abcd", False),
    ({"type": "string", "min": 3}, "abc", True),
    # a string is never trimmed silently: a stray space is refused.
    ({"type": "string"}, "example.org ", False),
    ({"type": "secret"}, " pass phrase ", True),
    # bool: y and n are yes and no.
    ({"type": "bool"}, "y", True),
    ({"type": "bool"}, "N", True),
    ({"type": "bool"}, "maybe", False),
    # a secret the runbook generates: a typed one must be as strong (16), or its own min.
    ({"type": "secret", "generate": 20}, "short", False),
    ({"type": "secret", "generate": 20}, "x" * 16, True),
    ({"type": "secret"}, "k7Q", True),
    ({"type": "secret", "min": 8}, "k7Q", False),
])
def test_the_rules_decided_once(spec: dict[str, Any], raw: str, ok: bool) -> None:
    param = Param.model_validate({"name": "p", **spec})
    assert cli_verdict(param, raw)[0] is ok
    assert tui_verdict(param, raw)[0] is ok


def test_an_empty_field_is_no_value_given() -> None:
    required = Param(name="p", type="string")
    assert validation.check(required, "") == "required"
    assert validation.check(Param(name="p", type="secret", generate=20), "") is None
    assert validation.convert(Param(name="p", default="x"), "") is None


def test_one_truthiness() -> None:
    from elematrix_tui.actions import aws_session

    assert not hasattr(aws_session, "_truthy") and vars(aws_session)["truthy"] is truthy
    assert all(truthy(w) for w in TRUE_WORDS) and not any(truthy(w) for w in FALSE_WORDS)
    assert truthy(True) and not truthy("maybe") and not truthy(None)
    assert validation.is_on("Y") and not validation.is_on("off")


def test_one_secret_generator() -> None:
    """The form, the resolver and the stack's own secrets use engine.params.generate_secret
    (no copy left in the UI)."""
    import elematrix_tui.actions.stack as stack_action
    from elematrix_tui.engine import params as engine_params
    from elematrix_tui.ui.screens import params as form

    assert not hasattr(validation, "generate_secret")
    assert vars(form)["generate_secret"] is engine_params.generate_secret
    assert vars(stack_action)["generate_secret"] is engine_params.generate_secret
    source = Path(stack_action.__file__).read_text()
    assert "token_urlsafe(" not in source
