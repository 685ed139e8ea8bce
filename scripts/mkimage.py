#!/usr/bin/env python3
"""Writes a one-layer container image as a docker-archive tar (what `ctr images import`,
`docker load` and `podman load` accept) from a root folder, without a registry or a daemon.

Reproducible: entries sorted, owned by root, mtime 0, so the same folder gives the same
image id.

    mkimage.py ROOTFS NAME[,NAME...] OUT [--user UID:GID] [--] [ENTRYPOINT...]
"""
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_of(rootfs):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for n in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, n)
                info = t.gettarinfo(full, arcname=os.path.relpath(full, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isreg():
                    with open(full, "rb") as f:
                        t.addfile(info, f)
                else:
                    t.addfile(info)
    return buf.getvalue()


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    rootfs, names, out, rest = argv[0], argv[1].split(","), argv[2], argv[3:]
    user = None
    if rest[:1] == ["--user"]:
        if len(rest) < 2:
            sys.exit("--user needs UID:GID")
        user, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    layer = layer_of(rootfs)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    if rest:
        config["config"]["Entrypoint"] = rest
    if user:
        config["config"]["User"] = user
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": names, "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(out + ".tmp", "w") as t:
        for fname, data in [("layer.tar", layer), (config_name, config_bytes), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main(sys.argv[1:])
