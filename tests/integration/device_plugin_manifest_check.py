#!/usr/bin/env python3
"""deploy/kubernetes/gpushare-device-plugin.yaml against the plugin it runs: every
option it passes is one the plugin has (its --help), and every host path the plugin
is told about is mounted at that same path (the kubelet mounts host paths into the
workloads, so the plugin must see them where the host has them).

usage: device_plugin_manifest_check.py MANIFEST PLUGIN_BINARY"""
import re
import subprocess
import sys

import yaml


def fail(why):
    print("manifest check: " + why)
    sys.exit(1)


def main(manifest, plugin):
    docs = [d for d in yaml.safe_load_all(open(manifest)) if d]
    daemonsets = [d for d in docs if d.get("kind") == "DaemonSet"]
    if len(daemonsets) != 1:
        fail("expected one DaemonSet, found %d" % len(daemonsets))
    spec = daemonsets[0]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    mounts = {}
    for m in container["volumeMounts"]:
        volume = volumes.get(m["name"])
        if volume is None:
            fail("mount %s names no volume" % m["name"])
        if "hostPath" not in volume:
            fail("volume %s is not a hostPath" % m["name"])
        mounts[m["mountPath"]] = volume["hostPath"]["path"]
    unused = set(volumes) - {m["name"] for m in container["volumeMounts"]}
    if unused:
        fail("volumes never mounted: %s" % sorted(unused))

    options = set(re.findall(r"--[a-z-]+", subprocess.run([plugin, "--help"], capture_output=True, text=True,
                                                         check=True).stdout))
    args = {}
    for arg in container["args"]:
        key, _, value = arg.partition("=")
        if key not in options:
            fail("%s is not an option of gpushare-device-plugin" % key)
        args[key] = value

    def covering(path):
        """The mount path under which `path` is (the deepest), or None."""
        under = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
        return max(under, key=len) if under else None

    def mounted_at_host_path(path, what):
        mount = covering(path)
        if mount is None:
            fail("%s %s is not mounted" % (what, path))
        if mounts[mount] != mount:
            fail("%s %s is mounted from another host path (%s)" % (what, path, mounts[mount]))

    mounted_at_host_path(args.get("--socket", "/run/gpushare/broker.sock"), "the broker's socket")
    mounted_at_host_path(args.get("--plugin-dir", "/var/lib/kubelet/device-plugins") + "/kubelet.sock",
                         "the kubelet's socket")
    mounted_at_host_path(args.get("--pod-resources", "/var/lib/kubelet/pod-resources/kubelet.sock"),
                         "the pod resources socket")
    if "--library" not in args:
        fail("--library must name the library's host path")
    mounted_at_host_path(args["--library"], "the library")
    nvml = args.get("--nvml")
    if nvml and nvml != "none" and covering(nvml) is None:
        fail("NVML %s is not mounted" % nvml)

    requests = [c["resources"]["limits"] for d in docs if d.get("kind") == "Pod" for c in d["spec"]["containers"]]
    if not any(any(k.startswith("gpushare.io/") for k in r) for r in requests):
        fail("the example pod asks for no gpushare.io resource")
    print("manifest check: ok (%d mounts, %d options)" % (len(mounts), len(args)))


if __name__ == "__main__":
    main(*sys.argv[1:])
