"""Validate an Envoy v3 bootstrap (YAML or JSON) against Envoy's API.

Usage: validate_envoy.py FILE...

Loads FILE into envoy_data_plane.envoy.config.bootstrap.v3.Bootstrap, the
typed classes that the `envoy-data-plane` package generates from Envoy's
data-plane API protos, with unknown fields refused (betterproto2's
`from_dict(..., ignore_unknown_fields=False)`, the default, raises on any
field the message does not have, on enum names it does not know and on
malformed durations). Every `typed_config` (`google.protobuf.Any`) is
unpacked into the message its `@type` names, so the same rules apply inside
the extensions; an `@type` whose class does not exist fails.

Then the parsed message is turned back into a dict and compared with the
input, so a value that was accepted but read as something else (a string
where a number belongs, a key that maps to another field) fails too.

Prints one line per file, `ok: FILE: N listeners, M clusters` or
`error: FILE: why`, and exits 0 when every file is valid, else 1 (one
process for several files: importing the generated classes takes seconds).
"""

import importlib
import json
import sys

import betterproto2
import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

PREFIX = "type.googleapis.com/"


def type_urls(node):
    """Every `@type` in the document."""
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from type_urls(item)


def register(url):
    """Import the module of a type URL so that Any can unpack it."""
    if not url.startswith(PREFIX):
        raise ValueError(f"@type {url!r} does not start with {PREFIX}")
    package, _, name = url[len(PREFIX):].rpartition(".")
    module = importlib.import_module("envoy_data_plane." + package)
    if not hasattr(module, name):
        raise ValueError(f"@type {url!r}: {package} has no message {name}")


def normalize(node):
    """Drop what protobuf cannot tell from its default (false, 0, "", {}, []),
    and read integers that proto3 JSON writes as strings (int64) as numbers."""
    if isinstance(node, str) and node.lstrip("-").isdigit():
        return int(node)
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            value = normalize(value)
            if value in (False, 0, "", {}, [], None) and not isinstance(value, float):
                continue
            out[key] = value
        return out
    if isinstance(node, list):
        return [normalize(item) for item in node]
    return node


def validate(path):
    """The verdict on one file: (True, summary) or (False, reason)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(doc, dict):
        return False, "the document is not a mapping"
    try:
        for url in sorted(set(type_urls(doc))):
            register(url)
        bootstrap = Bootstrap.from_dict(doc)
    except Exception as e:  # the validator's verdict, whatever its type
        return False, f"not a valid envoy.config.bootstrap.v3.Bootstrap: {type(e).__name__}: {e}"
    back = bootstrap.to_dict(casing=betterproto2.Casing.SNAKE)
    if normalize(back) != normalize(doc):
        return False, (
            "the parsed bootstrap differs from the input:\n"
            + "input:  " + json.dumps(normalize(doc), sort_keys=True) + "\n"
            + "parsed: " + json.dumps(normalize(back), sort_keys=True)
        )
    resources = bootstrap.static_resources
    return True, f"{len(resources.listeners)} listeners, {len(resources.clusters)} clusters"


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for path in sys.argv[1:]:
        ok, verdict = validate(path)
        print(f"{'ok' if ok else 'error'}: {path}: {verdict}")
        failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
