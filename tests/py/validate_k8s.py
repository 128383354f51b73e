"""Kubernetes manifests for tests/packaging.rs.

    validate_k8s.py validate VERSION[,VERSION...] FILE...
        Every object of every YAML file against the Kubernetes JSON schemas
        that kubernetes-validate ships, strict (unknown fields are errors), for
        each Kubernetes version; PodMonitors against the prometheus-operator
        CRD schema (scripts/k8s-models/validate-podmonitor.mjs). One line per
        object and version: `ok: FILE: Kind/name: ...` or `error: ...`. A kind
        with no schema is an error, never skipped.

    validate_k8s.py same A B
        Whether two YAML streams hold the same objects (by kind and name),
        whatever their order and formatting: `same: N objects` or one
        `differs: ...` line per difference.

Exits 0 when it ran; the verdicts are in the output.
"""

import json
import os
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEPS = os.environ.get("SNI_ROUTER_TEST_DEPS", "/opt/sni-router-test-deps")
MODELS = os.path.join(DEPS, "k8s-models")
PODMONITOR = os.path.join(ROOT, "scripts", "k8s-models", "validate-podmonitor.mjs")


def objects(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def name_of(obj):
    return "%s/%s" % (obj.get("kind", "?"), (obj.get("metadata") or {}).get("name", "?"))


def validate(versions, paths):
    podmonitors = []
    for path in paths:
        for obj in objects(path):
            if obj.get("apiVersion") == "monitoring.coreos.com/v1" and obj.get("kind") == "PodMonitor":
                podmonitors.append((path, obj))
                continue
            for version in versions:
                try:
                    used = kubernetes_validate.validate(obj, version, strict=True)
                    print("ok: %s: %s: Kubernetes %s schema (kubernetes-validate %s), strict"
                          % (path, name_of(obj), used, kubernetes_validate.__version__))
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    print("error: %s: %s: Kubernetes %s: %s: %s" % (path, name_of(obj), e.version, where, e.message))
                except kubernetes_validate.SchemaNotFoundError as e:
                    print("error: %s: %s: %s" % (path, name_of(obj), e.message))
    if podmonitors:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([obj for _, obj in podmonitors], f)
        try:
            out = subprocess.run(["node", PODMONITOR, MODELS, f.name], capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(f.name)
        lines = out.stdout.splitlines()
        if out.returncode != 0 or len(lines) != len(podmonitors):
            print("error: the PodMonitor validator failed (exit %d): %s %s"
                  % (out.returncode, out.stdout.strip(), out.stderr.strip()))
            return
        for (path, _), line in zip(podmonitors, lines):
            verdict, _, rest = line.partition(": ")
            print("%s: %s: %s" % (verdict, path, rest))


def first_difference(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return "%s.%s only in %s" % (path, key, "the first" if key in a else "the second")
            diff = first_difference(a[key], b[key], "%s.%s" % (path, key))
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return "%s: %d items against %d" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, "%s[%d]" % (path, i))
            if diff:
                return diff
        return None
    return None if a == b else "%s: %r against %r" % (path, a, b)


def same(a_path, b_path):
    a = {name_of(o): o for o in objects(a_path)}
    b = {name_of(o): o for o in objects(b_path)}
    differences = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            differences.append("%s only in %s" % (name, a_path if name in a else b_path))
            continue
        diff = first_difference(a[name], b[name])
        if diff:
            differences.append("%s: %s" % (name, diff))
    for d in differences:
        print("differs: " + d)
    if not differences:
        print("same: %d objects" % len(a))


def main(argv):
    if len(argv) >= 3 and argv[0] == "validate":
        validate(argv[1].split(","), argv[2:])
    elif len(argv) == 3 and argv[0] == "same":
        same(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
