#!/usr/bin/env python3
"""Build the stack's four images locally, for machines no container registry answers.

    python3 scripts/build_images.py            build what is missing or stale, say what
    python3 scripts/build_images.py --check    exit 1 when a build would be needed
    python3 scripts/build_images.py --pull-or-build  pull what is missing when a registry
                                               answers, build the rest (scripts/setup.sh)
    python3 scripts/build_images.py --namespace NS   build under NS/<tag> (benchmarks)

The names and tags are read from the one table ``elematrix_tui/stack/values.py: IMAGES``
(parsed, not imported: this runs with the system python3 and the standard library only,
before the project's virtualenv matters), so a bumped pin is followed by the next build.

How (docs/test-images.md has the contracts each image keeps and their sources):

1. a Debian bookworm minbase root filesystem from ``debootstrap`` is imported once as the
   base image ``elematrix-local/debian:bookworm-minbase`` (no registry needed);
2. each image is ``docker build`` of ``scripts/images/<name>/`` ``FROM`` that base, tagged
   with exactly the name and tag the rendered compose file uses;
3. every image we build carries the label ``org.elematrix.local-build=<input hash>``: the
   hash of its context files, its tag, its build arguments and the base image's id. An
   image whose label matches is left as it is (a no-op), one whose label differs is
   rebuilt, and a tag WITHOUT our label came from a registry (or someone else's build):
   it is never overwritten, and the builder says so.

Builds run with ``--network host``: the engine here runs with ``--iptables=false``, so the
default bridge has no NAT to Debian's mirror and PyPI. pip inside the Synapse build gets
this machine's CA bundle and the network-related settings of ``pip config list``.
A machine-wide lock (``/tmp/elematrix-image-build.lock``) serialises concurrent builders.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO / "scripts" / "images"
VALUES_PY = REPO / "elematrix_tui" / "stack" / "values.py"
LABEL = "org.elematrix.local-build"
UPSTREAM_LABEL = "org.elematrix.stands-in-for"
BASE_REF = "elematrix-local/debian:bookworm-minbase"
BUILD_LOCK = Path("/tmp/elematrix-image-build.lock")
LOG_DIR = Path(os.environ.get("ELEMATRIX_IMAGE_LOG_DIR", "/tmp/elematrix-image-build"))
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Bump when the base recipe below changes: the base (and so every image) is rebuilt.
BASE_RECIPE = 1
# Extra directories copied into an image's build context (as common/).
SHARED_CONTEXT = {"nginx": "nginx-common", "element": "nginx-common"}
# Images whose build runs pip: they get this machine's CA bundle and pip settings.
PIP_CONTEXT = frozenset({"synapse", "synapse-workers"})
# Build order: nginx before element, so element reuses the shared nginx layers.
ORDER = ("postgres", "synapse", "nginx", "element")

_BASE_SOURCES = f"""\
deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main
deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main
deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main
"""
# Like Debian's own container images: no recommends, no cached .debs, and no daemon
# started by a package's postinst (nginx's would bind port 80 of the build host network).
_BASE_FILES = {
    "etc/apt/sources.list": _BASE_SOURCES,
    "etc/apt/apt.conf.d/90elematrix-container": (
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        'Acquire::Languages "none";\n'
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
    ),
    "etc/dpkg/dpkg.cfg.d/90elematrix-container": (
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
    ),
    "usr/sbin/policy-rc.d": "#!/bin/sh\n# No service starts during image builds.\nexit 101\n",
}


class BuildError(RuntimeError):
    """A build could not be done; the message says which image and why."""


def log(msg: str) -> None:
    print(f"images: {msg}", flush=True)


# --- what to build -------------------------------------------------------------------


def pinned_images(values_py: Path = VALUES_PY) -> dict[str, str]:
    """The ``IMAGES`` table of values.py, read without importing the package."""
    tree = ast.parse(values_py.read_text(), str(values_py))
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id == "IMAGES" and value is not None:
            table = ast.literal_eval(value)
            if not isinstance(table, dict) or set(table) != set(ORDER):
                raise BuildError(f"{values_py}: IMAGES must name exactly {', '.join(ORDER)}")
            return {str(k): str(v) for k, v in table.items()}
    raise BuildError(f"{values_py}: no IMAGES table")


def split_ref(ref: str) -> tuple[str, str]:
    """``name:tag`` (a registry host with a port stays in the name)."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not tag:
        raise BuildError(f"image {ref!r} has no tag")
    return name, tag


def build_args(key: str, ref: str) -> dict[str, str]:
    """The build arguments a pin implies: versions and the flavour's uids."""
    _, tag = split_ref(ref)
    alpine = "alpine" in tag
    if key == "synapse":
        m = re.fullmatch(r"v?(\d+\.\d+\.\d+)", tag)
        if not m:
            raise BuildError(f"synapse tag {tag!r} is not v<major>.<minor>.<patch>")
        return {"SYNAPSE_VERSION": m.group(1)}
    if key == "postgres":
        major = tag.split(".", 1)[0].split("-", 1)[0]
        if major != "15":
            # Debian bookworm ships PostgreSQL 15 only; another major needs another base.
            raise BuildError(f"postgres tag {tag!r}: only PostgreSQL 15 can be built here")
        # The official image's postgres user: uid/gid 70 on Alpine, 999 on Debian.
        return {"PG_MAJOR": major, "PG_UID": "70" if alpine else "999"}
    if key == "nginx":
        return {"NGINX_UID": "101"}
    if key == "element":
        return {"NGINX_UID": "101", "ELEMENT_VERSION": tag.removeprefix("v")}
    raise BuildError(f"unknown image key {key!r}")


@dataclass
class Image:
    key: str
    ref: str
    pin: str = ""
    args: dict[str, str] = field(default_factory=dict)


def plan(images: dict[str, str], namespace: str = "") -> list[Image]:
    prefix = f"{namespace.strip('/')}/" if namespace else ""
    return [Image(k, prefix + images[k], images[k], build_args(k, images[k])) for k in ORDER]


# --- the engine ----------------------------------------------------------------------


def docker(*args: str, check: bool = True, capture: bool = True,
           input_: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["docker", *args], capture_output=capture, text=True,
                              check=False, timeout=timeout,
                              input=None if input_ is None else input_.decode())
    except FileNotFoundError as e:
        raise BuildError("the docker client is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"docker {' '.join(args[:2])} timed out after {timeout:.0f} s") from e
    if check and proc.returncode != 0:
        raise BuildError(f"docker {' '.join(args[:3])} failed: {(proc.stderr or '').strip()}")
    return proc


def inspect(ref: str) -> dict[str, object] | None:
    """The engine's record of an image, or None when the tag is not there."""
    proc = docker("image", "inspect", ref, check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    return data[0] if data else None


def labels_of(info: dict[str, object] | None) -> dict[str, str]:
    config = (info or {}).get("Config") or {}
    labels = config.get("Labels") if isinstance(config, dict) else None
    return dict(labels) if isinstance(labels, dict) else {}


def decide(info: dict[str, object] | None, want_hash: str) -> str:
    """What to do with a tag: ``build``, ``cached`` or ``foreign`` (leave it alone).

    ``foreign``: the tag exists without our label, so it came from a registry (or a build
    that is not ours); overwriting it would silently replace the real image.
    """
    if info is None:
        return "build"
    have = labels_of(info).get(LABEL)
    if have is None:
        return "foreign"
    return "cached" if have == want_hash else "build"


# --- the base image ------------------------------------------------------------------


def base_hash() -> str:
    h = hashlib.sha256()
    h.update(f"recipe={BASE_RECIPE} suite={DEBIAN_SUITE} mirror={DEBIAN_MIRROR}\n".encode())
    for rel, text in sorted(_BASE_FILES.items()):
        h.update(f"{rel}\0{text}\0".encode())
    return h.hexdigest()[:32]


def ensure_base(namespace: str = "") -> tuple[str, str]:
    """The base image's ref and id, importing it from debootstrap when needed."""
    ref = f"{namespace.strip('/')}/{BASE_REF}" if namespace else BASE_REF
    want = base_hash()
    info = inspect(ref)
    action = decide(info, want)
    if action == "foreign":
        raise BuildError(f"{ref} exists but was not built by this builder; remove or "
                         "retag it yourself (it is not overwritten)")
    if action == "cached" and info is not None:
        return ref, str(info["Id"])
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (scripts/setup.sh installs it)")
    log(f"creating the base image {ref} with debootstrap (Debian {DEBIAN_SUITE} minbase)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="elematrix-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        try:
            _debootstrap_and_import(root, ref, want, namespace)
        finally:
            # An interrupted debootstrap leaves /proc and /sys mounted in the target: never
            # let the directory's removal walk into them.
            _unmount_under(root)
    log(f"base image {ref} ready ({time.monotonic() - started:.0f} s)")
    info = inspect(ref)
    if info is None:
        raise BuildError(f"{ref} is missing right after its import")
    return ref, str(info["Id"])


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == str(root) or line.split()[1].startswith(prefix)]


def _unmount_under(root: Path) -> None:
    for mnt in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False, timeout=60)
    if _mounts_under(root):
        raise BuildError(f"could not unmount everything under {root}; remove it by hand")


def _debootstrap_and_import(root: Path, ref: str, want: str, namespace: str) -> None:
    """debootstrap into root, add the container settings, import it as ref."""
    logfile = LOG_DIR / (f"{namespace.strip('/')}-debootstrap.log" if namespace
                         else "debootstrap.log")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    rc = _run_logged(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root),
                      DEBIAN_MIRROR], logfile, timeout=900)
    if rc != 0:
        raise BuildError(f"debootstrap failed (exit {rc}); log: {logfile}\n"
                         + _tail(logfile))
    for rel, text in _BASE_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel.startswith("usr/sbin/"):
            path.chmod(0o755)
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / sub).glob("*"):
            if p.is_file():
                p.unlink()
    # debootstrap unmounts /proc and /sys when it is done; never archive a mount.
    mounted = _mounts_under(root)
    if mounted:
        raise BuildError(f"debootstrap left mounts under {root}: {', '.join(mounted)}")
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."],
                           stdout=subprocess.PIPE)
    imp = subprocess.run(
        ["docker", "import",
         "--change", f"LABEL {LABEL}={want}",
         "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
         "--change", 'CMD ["bash"]',
         "-", ref], stdin=tar.stdout, capture_output=True, text=True, check=False)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or imp.returncode != 0:
        raise BuildError(f"importing the base image failed: {imp.stderr.strip()}")


# --- one image -----------------------------------------------------------------------


def pip_conf() -> str:
    """The network settings of this machine's pip, for pip inside the Synapse build.

    Local folders (find-links, file:// indexes) do not exist inside the build; the CA
    bundle is copied in as /etc/elematrix-build-ca.crt.
    """
    lines = ["[global]", "cert = /etc/elematrix-build-ca.crt", "no-cache-dir = true"]
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, check=False, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    seen: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        value = value.strip().strip("'\"")
        if name in ("index-url", "extra-index-url"):
            urls = [u for u in value.split() if u.startswith(("http://", "https://"))]
            if urls:
                seen[name] = " ".join(urls)
        elif name in ("default-timeout", "timeout", "retries", "trusted-host", "proxy"):
            seen["timeout" if name == "default-timeout" else name] = value
    lines += [f"{k} = {v}" for k, v in sorted(seen.items())]
    return "\n".join(lines) + "\n"


def assemble_context(image: Image, dest: Path) -> None:
    """Copy the image's build context (and what it shares) into ``dest``."""
    src = IMAGES_DIR / image.key
    if not (src / "Dockerfile").is_file():
        raise BuildError(f"{src}/Dockerfile is missing")
    shutil.copytree(src, dest, symlinks=False)
    shared = SHARED_CONTEXT.get(image.key)
    if shared:
        shutil.copytree(IMAGES_DIR / shared, dest / "common")
    if image.key in PIP_CONTEXT:
        if not CA_BUNDLE.is_file():
            raise BuildError(f"{CA_BUNDLE} is missing: pip inside the build needs it")
        shutil.copyfile(CA_BUNDLE, dest / "ca.crt")
        (dest / "pip.conf").write_text(pip_conf())


def context_hash(ctx: Path, image: Image, base_id: str) -> str:
    """The input hash: every context file (path, mode, bytes), the tag, args and base."""
    h = hashlib.sha256()
    # The tag without a namespace: a namespaced copy has the same inputs.
    h.update(f"key={image.key}\npin={image.pin}\nargs={json.dumps(image.args, sort_keys=True)}\n"
             f"base={base_id}\n".encode())
    for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
        rel = path.relative_to(ctx).as_posix()
        h.update(f"{rel}\0{path.stat().st_mode & 0o111:o}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:32]


def _run_logged(cmd: list[str], logfile: Path, timeout: float,
                env: dict[str, str] | None = None) -> int:
    """Run cmd with its output in logfile; its exit status (a timeout is a BuildError)."""
    with logfile.open("w") as out:
        try:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  check=False, timeout=timeout).returncode
        except subprocess.TimeoutExpired as e:
            raise BuildError(f"{cmd[0]} {cmd[1]} did not finish within {timeout:.0f} s; "
                             f"log: {logfile}") from e


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def build_one(image: Image, base_ref: str, base_id: str, *, check_only: bool = False) -> str:
    """Build one image if needed; returns what happened (built/cached/foreign/stale)."""
    with tempfile.TemporaryDirectory(prefix=f"elematrix-ctx-{image.key}-") as tmp:
        ctx = Path(tmp) / "ctx"
        assemble_context(image, ctx)
        want = context_hash(ctx, image, base_id)
        info = inspect(image.ref)
        action = decide(info, want)
        if action == "foreign":
            log(f"{image.ref} exists and was not built here (no {LABEL} label): probably "
                "pulled from a registry; it is left alone and used as it is")
            return "foreign"
        if action == "cached":
            return "cached"
        if check_only:
            return "stale"
        why = "missing" if info is None else "its inputs changed"
        log(f"building {image.ref} ({why}) ...")
        started = time.monotonic()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        # A namespaced (benchmark) build keeps its own logs beside the real ones.
        prefix = image.ref[: -len(image.pin)].strip("/").replace("/", "_")
        logfile = LOG_DIR / (f"{prefix}-{image.key}.log" if prefix else f"{image.key}.log")
        cmd = ["docker", "build", "--network", "host", "--pull=false", "--rm", "--force-rm",
               "--build-arg", f"BASE={base_ref}",
               "--label", f"{LABEL}={want}", "--label", f"{UPSTREAM_LABEL}={image.ref}",
               "-t", image.ref]
        for k, v in sorted(image.args.items()):
            cmd += ["--build-arg", f"{k}={v}"]
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        rc = _run_logged([*cmd, str(ctx)], logfile, timeout=1800, env=env)
        if rc != 0:
            raise BuildError(f"building {image.ref} failed (exit {rc}); log: {logfile}\n"
                             + _tail(logfile))
        log(f"built {image.ref} in {time.monotonic() - started:.0f} s")
        if info is not None:
            # The stale image we replaced (ours: it had our label) is now untagged; remove
            # it unless a container still uses it (then docker refuses, and it stays).
            old = str(info["Id"])
            left = inspect(old)
            if left is not None and not left.get("RepoTags"):
                docker("image", "rm", old, check=False)
        return "built"


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One builder at a time on this machine (tests, setup and benchmarks share it)."""
    fd = os.open(BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_images(namespace: str = "", *, check_only: bool = False,
                  images: dict[str, str] | None = None) -> dict[str, str]:
    """Build whatever is missing or stale; returns {ref: built|cached|foreign|stale}."""
    wanted = plan(images or pinned_images(), namespace)
    with build_lock():
        if check_only:
            ref = f"{namespace.strip('/')}/{BASE_REF}" if namespace else BASE_REF
            info = inspect(ref)
            if decide(info, base_hash()) != "cached" or info is None:
                return {i.ref: "stale" for i in wanted}
            base_ref, base_id = ref, str(info["Id"])
        else:
            base_ref, base_id = ensure_base(namespace)
        return {i.ref: build_one(i, base_ref, base_id, check_only=check_only) for i in wanted}


def pull_missing(images: dict[str, str] | None = None) -> list[str]:
    """Pull the pinned images that are not in the engine; the refs still missing after.

    The first failed pull means no registry answers: nothing else is tried, the caller
    builds locally.
    """
    missing = [i.ref for i in plan(images or pinned_images()) if inspect(i.ref) is None]
    for n, ref in enumerate(missing):
        proc = docker("pull", "-q", ref, check=False, timeout=600)
        if proc.returncode != 0:
            why = (proc.stderr or "").strip().splitlines()[-1:] or ["no answer"]
            log(f"no registry answers (docker pull {ref}: {why[0]}): building the images "
                "locally instead (a few minutes the first time)")
            return missing[n:]
        log(f"pulled {ref}")
    return []


def remove_namespace(namespace: str) -> None:
    """Remove the images a namespaced build made (only ours: labelled, under NS/)."""
    ns = namespace.strip("/")
    if not ns:
        raise BuildError("refusing to remove the images of the empty namespace")
    refs = [i.ref for i in plan(pinned_images(), ns)] + [f"{ns}/{BASE_REF}"]
    for ref in reversed(refs):
        if LABEL in labels_of(inspect(ref)):
            docker("image", "rm", ref, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a build is needed")
    ap.add_argument("--namespace", default="", help="build under NS/<tag> instead")
    ap.add_argument("--pull-or-build", action="store_true",
                    help="pull missing images when a registry answers, else build them")
    ap.add_argument("--remove-namespace", action="store_true",
                    help="remove the images built under --namespace, then exit")
    ns = ap.parse_args(argv)
    try:
        if ns.remove_namespace:
            remove_namespace(ns.namespace)
            return 0
        started = time.monotonic()
        if ns.pull_or_build and not ns.namespace:
            pull_missing()
        result = ensure_images(ns.namespace, check_only=ns.check)
    except BuildError as e:
        print(f"images: error: {e}", file=sys.stderr)
        return 1
    if ns.check:
        stale = [r for r, a in result.items() if a == "stale"]
        for ref in stale:
            log(f"{ref} needs a build")
        return 1 if stale else 0
    built = [r for r, a in result.items() if a == "built"]
    if built:
        log(f"{len(built)} built, {len(result) - len(built)} up to date "
            f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
