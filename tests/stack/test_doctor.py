"""The config doctor: the broken-stack corpus, the command line, --fix, the action, parsers."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from elematrix_tui.actions.stack import Doctor
from elematrix_tui.engine.standalone import StandaloneContext
from elematrix_tui.stack import nginxconf
from elematrix_tui.stack.doctor import DoctorInputError, diagnose, main
from elematrix_tui.stack.fix import plan_fix
from elematrix_tui.stack.rules import RULES

from .conftest import PARAM_SETS, compose_config, nginx_test, render

STACKS = Path(__file__).resolve().parent.parent / "data" / "stacks"
BROKEN = sorted(p.name for p in STACKS.iterdir() if (p / "EXPECTED").exists())
GOOD = ["good-http"]


def _expected(case: str) -> set[str]:
    return {ln for ln in (STACKS / case / "EXPECTED").read_text().splitlines() if ln}


def _copy(case: str, tmp_path: Path) -> Path:
    dest = tmp_path / case
    shutil.copytree(STACKS / case, dest)
    return dest


def test_corpus_covers_every_rule() -> None:
    covered = {line.split()[0] for case in BROKEN for line in _expected(case)}
    assert covered == set(RULES), f"rules without a broken stack: {set(RULES) - covered}"


@pytest.mark.parametrize("case", BROKEN)
def test_broken_stack_found_with_rule_and_line(case: str) -> None:
    findings = diagnose(STACKS / case)
    got = {f"{f.rule} {f.file}:{f.line}" for f in findings}
    assert _expected(case) <= got, f"missing {_expected(case) - got}"
    # Each case breaks one thing: nothing else may be reported.
    assert got <= _expected(case), f"unexpected {got - _expected(case)}"
    for f in findings:
        assert f.severity == RULES[f.rule][0]
        assert f.why and f.fix and f.title


@pytest.mark.parametrize("case", GOOD)
def test_good_stacks_have_no_findings(case: str) -> None:
    assert diagnose(STACKS / case) == []


def test_bundled_stack_has_no_findings(tmp_path: Path) -> None:
    for name, params in PARAM_SETS.items():
        assert diagnose(render(tmp_path, params, name).path) == [], name


def test_good_stack_is_valid_compose_and_nginx(tmp_path: Path) -> None:
    """The hand-written 'correct' stack really is correct for compose-go and nginx."""
    stack = STACKS / "good-http"
    r = compose_config(stack, "docker-compose.yml", "-q")
    assert r.returncode == 0, r.stderr
    conf = (stack / "nginx/conf.d/element.conf").read_text()
    r2 = nginx_test(conf, tmp_path / "ngx")
    assert r2.returncode == 0, r2.stderr


def test_research_tls_stack_findings() -> None:
    """The research's TLS-built stack serves TLS on purpose: one advisory about the
    HTTP-only target (not one error per TLS directive), plus its real problems."""
    got = {(f.rule, f.file, f.line) for f in diagnose(STACKS / "tls-research")}
    assert got == {("EM019", "nginx/element.conf", 16),
                   ("EM006", "docker-compose.yml", 8),
                   ("EM007", "synapse-data/homeserver.yaml", 28)}
    # Against a TLS target the advisory goes too; the real problems stay.
    tls = {(f.rule, f.file, f.line) for f in diagnose(STACKS / "tls-research", target="tls")}
    assert tls == got - {("EM019", "nginx/element.conf", 16)}
    with pytest.raises(DoctorInputError, match="unknown target"):
        diagnose(STACKS / "tls-research", target="ftp")


# ---------------------------------------------------------------- command line


def _run(argv: list[str], answer: bool | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ask = (lambda _prompt: answer) if answer is not None else None
    code = main(argv, stdin=io.StringIO(""), stdout=out, stderr=err, ask=ask)
    return code, out.getvalue(), err.getvalue()


def test_exit_codes_and_text_format(tmp_path: Path) -> None:
    code, out, _ = _run([str(STACKS / "em001-redirect")])
    assert code == 1
    assert "nginx/conf.d/element.conf:8: error EM001: redirect to https" in out
    assert "    why: " in out and "    fix: " in out
    assert out.rstrip().endswith("1 error(s), 0 warning(s) in " + str(STACKS / "em001-redirect"))
    # Warnings alone exit 0.
    code, out, _ = _run([str(STACKS / "em015-depends-on")])
    assert code == 0 and "warning EM015" in out
    code, out, _ = _run([str(STACKS / "good-http")])
    assert code == 0


def test_bad_input_exits_2_without_traceback(tmp_path: Path) -> None:
    code, _out, err = _run([str(tmp_path / "missing")])
    assert code == 2 and "no such file or directory" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _out, err = _run([str(tmp_path / "empty")])
    assert code == 2 and "no compose file" in err
    code, _out, err = _run(["--format", "xml", str(STACKS / "good-http")])
    assert code == 2
    code, _out, _err = _run([])
    assert code == 2


def test_json_format() -> None:
    code, out, _ = _run(["--format", "json", str(STACKS / "em010-default-db-password")])
    assert code == 1
    doc = json.loads(out)
    assert doc["errors"] == 2 and doc["warnings"] == 0
    assert {(f["rule"], f["file"], f["line"]) for f in doc["findings"]} == {
        ("EM010", "synapse/homeserver.yaml", 16), ("EM010", "docker-compose.yml", 8)}
    # A finding never echoes the secret itself.
    assert "synapse\"" not in json.dumps([f["title"] for f in doc["findings"]])


def test_real_command_line(tmp_path: Path, elematrix: str) -> None:
    r = subprocess.run([elematrix, "doctor", str(STACKS / "tls-research"), "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["errors"] == 2
    r = subprocess.run([elematrix, "doctor", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ---------------------------------------------------------------- --fix


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_fix_shows_diff_and_writes_nothing_without_yes(tmp_path: Path) -> None:
    stack = _copy("tls-research", tmp_path)
    before = _tree(stack)
    code, out, err = _run([str(stack), "--fix"])  # no terminal: nothing asked, nothing written
    assert code == 1
    assert "--- a/nginx/element.conf" in out and "+++ b/nginx/element.conf" in out
    assert "-    listen 443 ssl http2;" in out or "-server {" in out
    assert "pass --yes to apply" in err
    assert _tree(stack) == before
    code, out, _ = _run([str(stack), "--fix"], answer=False)
    assert "nothing written" in out and _tree(stack) == before


def test_fix_applied_after_yes_leaves_a_valid_http_only_stack(tmp_path: Path) -> None:
    stack = _copy("tls-research", tmp_path)
    code, out, _ = _run([str(stack), "--fix"], answer=True)
    assert "wrote 4 file(s)" in out
    assert code == 0, out  # re-diagnosed after writing: no error left
    assert diagnose(stack) == []
    conf = (stack / "nginx/element.conf").read_text()
    assert "443" not in conf and "ssl" not in conf and "Strict-Transport" not in conf
    assert "return 301" not in conf and conf.count("server {") == 1
    assert "listen 80;" in conf and "listen [::]:80;" in conf
    # The fixed stack is still valid for compose-go and a real nginx.
    r = compose_config(stack, "docker-compose.yml", "-q")
    assert r.returncode == 0, r.stderr
    compose = (stack / "docker-compose.yml").read_text()
    assert "certbot:" not in compose and '"443:443"' not in compose
    assert 'POSTGRES_INITDB_ARGS: "--encoding=UTF8 --lc-collate=C --lc-ctype=C"' in compose
    r2 = nginx_test(conf, tmp_path / "ngx")
    assert r2.returncode == 0, r2.stderr
    hs = (stack / "synapse-data/homeserver.yaml").read_text()
    assert 'public_baseurl: "http://chat.acme-corp.example/"' in hs
    assert "enable_registration: true" in hs
    assert '"base_url": "http://chat.acme-corp.example"' in (
        stack / "element-config.json").read_text()


def test_fix_with_public_address_and_yes_flag(tmp_path: Path) -> None:
    stack = _copy("tls-research", tmp_path)
    code, out, _ = _run([str(stack), "--fix", "--yes", "--public-address", "54.1.2.3",
                         "--format", "json"])
    doc = json.loads(out)
    assert code == 0 and doc["fix"]["applied"] is True and doc["errors"] == 0
    assert "http://54.1.2.3/" in (stack / "synapse-data/homeserver.yaml").read_text()
    assert "http://54.1.2.3" in (stack / "nginx/element.conf").read_text()


@pytest.mark.parametrize("case", BROKEN)
def test_fix_on_each_broken_stack(case: str, tmp_path: Path) -> None:
    """Mechanical rules are fixed; the rest are listed as manual work, never silently kept."""
    stack = _copy(case, tmp_path)
    plan = plan_fix(stack)
    from elematrix_tui.stack.fix import apply_plan

    apply_plan(plan)
    left = {f.rule for f in diagnose(stack)}
    # EM001/EM013 stay manual only for Traefik labels and Caddyfiles (listed in plan.manual).
    manual_rules = {"EM000", "EM001", "EM009", "EM010", "EM011", "EM013", "EM015", "EM016",
                    "EM017", "EM020", "EM021", "EM022", "EM023", "EM024"}
    assert left <= manual_rules, f"{case}: not fixed: {left - manual_rules}"
    for rule in left:
        assert any(rule in m or rule == "EM000" for m in plan.manual), (rule, plan.manual)


def test_fix_on_good_stack_is_empty() -> None:
    plan = plan_fix(STACKS / "good-http")
    assert plan.diff == [] and plan.manual == []


# ---------------------------------------------------------------- the action


def test_doctor_action(tmp_path: Path) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    res = ctx.run(Doctor(), {"path": str(STACKS / "tls-research")})
    assert res.status == "failed"
    assert res.outputs["errors"] == 2 and res.outputs["warnings"] == 1
    assert {"rule", "severity", "file", "line", "why", "fix", "title"} <= set(
        res.outputs["findings"][0])
    assert res.diagnosis and "EM" in res.diagnosis and "--fix" in (res.fix or "")
    render(tmp_path, PARAM_SETS["default"])
    ok = ctx.run(Doctor(), {})  # default: <deployment_dir>/stack
    assert ok.status == "ok" and ok.outputs == {"errors": 0, "warnings": 0, "findings": []}


def test_doctor_action_missing_path(tmp_path: Path) -> None:
    from elematrix_tui.engine.action import ActionFailed

    with pytest.raises(ActionFailed):
        StandaloneContext(deployment_dir=tmp_path).run(Doctor(), {"path": "nope"})
    with pytest.raises(DoctorInputError):
        diagnose(tmp_path / "nope")


# ---------------------------------------------------------------- nginx parser


def test_nginx_parser_keeps_lines_quotes_and_comments() -> None:
    text = ('# comment { ;\nhttp {\n  server {\n    listen 80; # trailing\n'
            '    return 200 \'{"a": "b;}"}\';\n    location ~* ^/x\\{2\\} {\n'
            '      proxy_pass http://up;\n    }\n  }\n}\n')
    root = nginxconf.parse(text, Path("t.conf"))
    srv = nginxconf.servers(root)[0]
    assert (srv.line, srv.end_line) == (3, 9)
    ret = srv.children("return")[0]
    assert ret.args == ["200", '{"a": "b;}"}'] and ret.line == 5
    loc = srv.children("location")[0]
    assert loc.args[0] == "~*" and loc.line == 6
    assert nginxconf.effective(loc, "listen") is not None


@pytest.mark.parametrize(("text", "line"), [
    ("server {\n listen 80;\n", 1),
    ("server {\n listen 80\n}\n", 2),
    ("}\n", 1),
    ("server {\n return 200 'x;\n}\n", 2),
])
def test_nginx_parser_errors_have_lines(text: str, line: int) -> None:
    with pytest.raises(nginxconf.NginxSyntaxError) as e:
        nginxconf.parse(text, Path("t.conf"))
    assert e.value.line == line


def test_location_matching_follows_nginx() -> None:
    text = """server {
    location / { }
    location /_synapse { }
    location ^~ /_synapse/admin { }
    location ~ ^/_synapse/ad { }
    location = /exact { }
    location ~ ^/_matrix { }
    location /_matrix/media { }
}"""
    srv = nginxconf.servers(nginxconf.parse(text, Path("t")))[0]

    def where(uri: str) -> str:
        loc = nginxconf.location_match(srv, uri)
        return " ".join(loc.args) if loc else ""

    assert where("/_synapse/admin/v1") == "^~ /_synapse/admin"   # ^~ beats regex
    assert where("/_synapse/client") == "/_synapse"
    assert where("/exact") == "= /exact"
    assert where("/_matrix/media/v3/upload") == "~ ^/_matrix"    # regex beats plain prefix
    assert where("/index.html") == "/"


def test_templates_and_single_files(tmp_path: Path) -> None:
    """Jinja templates are not configs (skipped); a single file can be checked alone."""
    from elematrix_tui.stack.render import template_root

    with pytest.raises(DoctorInputError, match="no compose file"):
        diagnose(Path(str(template_root())))
    one = STACKS / "em001-redirect" / "nginx" / "conf.d" / "element.conf"
    assert [(f.rule, f.file, f.line) for f in diagnose(one)] == [("EM001", "element.conf", 8)]


def test_too_many_files_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from elematrix_tui.stack import load as model

    monkeypatch.setattr(model, "_MAX_FILES", 5)
    for i in range(6):
        (tmp_path / f"f{i}.txt").write_text("x")
    code, _out, err = _run([str(tmp_path)])
    assert code == 2 and "more than 5 files" in err


def _nginx_only(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "st"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


_MATRIX_SERVER = """server {
    listen 80;
    location /_matrix {
        proxy_pass http://synapse:8008;
    }
}
"""


@pytest.mark.parametrize(("size", "expect"), [("100M", set()), ("1m", {("EM014", 2)})])
def test_body_size_at_http_level_in_another_file(tmp_path: Path, size: str,
                                                 expect: set[tuple[str, int]]) -> None:
    root = _nginx_only(tmp_path, {
        "nginx/nginx.conf": f"events {{}}\nhttp {{\n    client_max_body_size {size};\n"
                            "    include conf.d/*.conf;\n}\n",
        "nginx/conf.d/matrix.conf": _MATRIX_SERVER})
    got = {(f.rule, f.line) for f in diagnose(root)}
    assert got == {(r, ln + 1) for r, ln in expect}
    if expect:
        plan = plan_fix(root)
        assert "+    client_max_body_size 50M;" in plan.diff


def test_fix_merges_listen_lines_of_a_mixed_server(tmp_path: Path) -> None:
    conf = """server {
    listen 80 default_server;
    listen 443 ssl http2 default_server;
    listen [::]:443 ssl;
    ssl_certificate /etc/letsencrypt/live/x/fullchain.pem;
    client_max_body_size 50M;
    location /_matrix {
        proxy_pass http://synapse:8008;
    }
}
"""
    root = _nginx_only(tmp_path, {"nginx/site.conf": conf})
    from elematrix_tui.stack.fix import apply_plan

    apply_plan(plan_fix(root))
    fixed = (root / "nginx/site.conf").read_text()
    assert fixed.count("listen 80 default_server;") == 1
    assert "listen [::]:80;" in fixed and "443" not in fixed and "ssl" not in fixed
    assert diagnose(root) == []
    r = nginx_test(fixed, tmp_path / "ngx")
    assert r.returncode == 0, r.stderr
