"""The one replacement in the worker stack's rehearsal: an nginx with a test CA's
certificate standing in for the ALB with its ACM certificate.

What the ALB does that the stand-in does too: TLS 1.2+ with a certificate of a CA the
client must trust (here: a CA made for this test run, trusted only by the clients the test
points at it: httpx and nio through ``SSL_CERT_FILE``, Chromium through its own NSS
database), HTTP on :80 redirected to HTTPS (301), ``X-Forwarded-For`` and
``X-Forwarded-Proto: https`` towards the instance's nginx, the request URI passed as sent.
What it does not do: ACM's renewal, the ALB's invalid-header dropping, access logs, its
security groups (the stack's nginx is simply not published here).
Only loopback: the edge is published on ``127.0.0.1:<free port>``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EDGE_CONF = """\
server {
    listen 80 default_server;
    # The container's own healthcheck (the ALB has its own target health checks).
    location = /edge-health { return 200 "ok"; }
    location / { return 301 https://$host$request_uri; }
}
# Not the ALB: the POC's shape (Element and Synapse over plain HTTP on a public name), for
# the browser check's "not possible over plain HTTP" side.
server {
    listen 8080 default_server;
    location / {
        proxy_pass http://nginx:80;
        proxy_set_header Host $host;
        proxy_http_version 1.1;
    }
}
server {
    listen 443 ssl default_server;
    ssl_certificate /etc/nginx/tls/server.crt;
    ssl_certificate_key /etc/nginx/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size %(max_body)s;
    location / {
        proxy_pass http://nginx:80;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto https;
        proxy_http_version 1.1;
        proxy_read_timeout 600s;
    }
}
"""


@dataclass
class TestCA:
    """The CA certificate (PEM) clients trust and the server pair the edge serves."""

    ca_pem: Path
    server_crt: Path
    server_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(out: Path, hostnames: tuple[str, ...], ips: tuple[str, ...] = ("127.0.0.1",)) -> TestCA:
    """A fresh CA and a server certificate for ``hostnames`` and ``ips``, valid one day."""
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("elematrix test CA"))
          .issuer_name(_name("elematrix test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(_name(hostnames[0]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = TestCA(out / "ca.pem", out / "server.crt", out / "server.key")
    paths.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    # The chain the edge serves: leaf then CA, as ACM serves it behind the ALB.
    paths.server_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                 + ca.public_bytes(serialization.Encoding.PEM))
    paths.server_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    paths.server_key.chmod(0o644)  # read by the nginx master (root) in the container
    return paths


def edge_compose(image: str, port: int, http_port: int, plain_port: int) -> str:
    """A compose override adding the ``edge`` service (the ALB stand-in) to the stack."""
    return f"""\
services:
  edge:
    image: {image!s}
    restart: "no"
    ports:
      - "127.0.0.1:{port}:443"
      - "127.0.0.1:{http_port}:80"
      - "127.0.0.1:{plain_port}:8080"
    volumes:
      - ./edge/default.conf:/etc/nginx/conf.d/default.conf:ro
      - ./edge/tls:/etc/nginx/tls:ro
    depends_on:
      nginx:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/edge-health"]
      interval: 2s
      timeout: 5s
      retries: 30
"""
