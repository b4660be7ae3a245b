"""The launchers themselves (tests/support/services.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.services import MatrixStack, Nginx, nginx_main_conf

pytestmark = pytest.mark.services


def test_stack_runs_the_projects_own_templates(matrix_stack: MatrixStack) -> None:
    assert matrix_stack.files is not None
    assert matrix_stack.files.source == "project"
    hs = matrix_stack.files.homeserver
    assert hs["enable_registration"] is True and hs["registration_requires_token"] is True
    assert hs["public_baseurl"].rstrip("/") == matrix_stack.base_url
    conf = matrix_stack.files.nginx_server_conf.read_text()
    # The shipped form re-resolves Synapse per request (a variable upstream); natively the
    # variable holds the loopback address, so no resolver lookup is involved.
    assert f"set $synapse {matrix_stack.admin_url};" in conf
    assert "proxy_pass $synapse;" in conf
    assert matrix_stack.postgres is not None
    got = matrix_stack.postgres.psql(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
        "WHERE datname = current_database()", db="synapse")
    assert got == "UTF8|C|C"


def test_nginx_t_is_judged_by_exit_code(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    good = matrix_stack.nginx
    assert good is not None
    t = good.test()
    assert t.ok and "syntax is ok" in t.output  # printed on stderr, exit 0
    bad_server = tmp_path / "bad.conf"
    bad_server.write_text("server { listen 127.0.0.1:1; proxy_pass; }\n")
    main = tmp_path / "nginx.conf"
    main.write_text(nginx_main_conf(tmp_path, bad_server))
    t = Nginx(main, tmp_path).test()
    assert not t.ok and "emerg" in t.output
