#!/usr/bin/env python3
"""Assembles the collate-run container image as an OCI image layout, without a container engine
or network: the binary, exactly the shared libraries `ldd` lists, the glibc NSS modules DNS needs,
the CA certificates, a non-root user and the recipes, in one reproducible layer.

    scripts/image.py --binary target/release/collate-run --out target/image [--tag 0.1.0]

Push it with `skopeo copy oci:target/image:0.1.0 docker://REGISTRY/collate-run:0.1.0` (or
`podman load`/`crane push`). The Containerfile builds the same image with a builder.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = "usr/local/bin/collate-run"
RECIPES = "usr/share/collate-run/recipes"
CA = "etc/ssl/certs/ca-certificates.crt"
USER = 65532
# glibc resolves names through NSS: `files` (/etc/hosts) and `dns` (/etc/resolv.conf).
NSS = ["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"]


def libraries(binary):
    """The absolute paths ldd resolves for `binary` (the loader included), and the NSS modules."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            paths.append(m.group(1))
    libdir = os.path.dirname(next(p for p in paths if os.path.basename(p).startswith("libc.so")))
    for name in NSS:
        p = os.path.join(libdir, name)
        if os.path.exists(p):
            paths.append(p)
    return sorted(set(paths))


def add_file(tar, arcname, data, mode=0o644):
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, arcname, mode=0o755):
    info = tarfile.TarInfo(arcname)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = 0
    tar.addfile(info)


def layer(binary):
    """The root filesystem as one uncompressed tar (sorted, mtime 0, owned by root)."""
    files = {}
    with open(binary, "rb") as f:
        files[BIN] = (f.read(), 0o755)
    for lib in libraries(binary):
        with open(os.path.realpath(lib), "rb") as f:
            files[lib.lstrip("/")] = (f.read(), 0o755)
    with open("/" + CA, "rb") as f:
        files[CA] = (f.read(), 0o644)
    files["etc/passwd"] = (f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER}:{USER}:nonroot:/home/nonroot:/sbin/nologin\n".encode(), 0o644)
    files["etc/group"] = (f"root:x:0:\nnonroot:x:{USER}:\n".encode(), 0o644)
    files["etc/nsswitch.conf"] = (b"hosts: files dns\n", 0o644)
    recipes = os.path.join(ROOT, "recipes")
    for d, _, names in os.walk(recipes):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                files[os.path.join(RECIPES, os.path.relpath(p, recipes))] = (f.read(), 0o644)
    dirs = {"tmp": 0o1777, f"home/nonroot": 0o755}
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.setdefault("/".join(parts[:i]), 0o755)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            add_dir(tar, d, dirs[d])
        for name in sorted(files):
            data, mode = files[name]
            add_file(tar, name, data, mode)
    return buf.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def version(binary):
    out = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True).stdout
    return out.split()[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/collate-run"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target/image"))
    ap.add_argument("--tag")
    args = ap.parse_args()
    tag = args.tag or version(args.binary)

    tar = layer(args.binary)
    gz = gzip.compress(tar, compresslevel=9, mtime=0)
    os.makedirs(args.out, exist_ok=True)
    layer_desc = blob(args.out, gz)
    layer_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{USER}:{USER}",
            "Entrypoint": ["/" + BIN],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/" + CA],
            "WorkingDir": "/" + os.path.dirname(RECIPES),
            "Labels": {
                "org.opencontainers.image.title": "collate-run",
                "org.opencontainers.image.version": tag,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created_by": "scripts/image.py"}],
    }
    config_desc = blob(args.out, json.dumps(config, sort_keys=True).encode())
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(args.out, json.dumps(manifest, sort_keys=True).encode())
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": [manifest_desc]}, f, sort_keys=True)
    with open(os.path.join(args.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"{args.out}: collate-run:{tag} {manifest_desc['digest']} ({layer_desc['size']} bytes compressed)")


if __name__ == "__main__":
    sys.exit(main())
