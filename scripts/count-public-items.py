#!/usr/bin/env python3
"""Counts the library's public items: those a user can name from the crate root.

Usage: scripts/count-public-items.py [--list] [--module PATH]

Builds the rustdoc JSON of the library (needs a nightly toolchain:
`cargo +nightly rustdoc --lib -- -Z unstable-options --output-format json`), then walks
from the crate root through public modules and public re-exports (`pub use`, globs too),
counting each item once. "Items" are what a module can hold: modules, structs, enums,
unions, traits, functions, constants, statics, type aliases and macros. Fields, variants and
methods are not counted: they belong to their type. `--module internals` also counts the
part under `qga_harness::internals` (not the stable API) separately.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

# The crate to count: this script's checkout, or the directory given in CRATE_DIR.
ROOT = Path(os.environ.get("CRATE_DIR", Path(__file__).resolve().parent.parent))
KINDS = {"module", "struct", "enum", "union", "trait", "function", "constant", "static",
         "type_alias", "macro", "trait_alias", "proc_macro"}


def build() -> dict:
    subprocess.run(
        ["cargo", "+nightly", "rustdoc", "--lib", "--quiet", "--",
         "-Z", "unstable-options", "--output-format", "json"],
        cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return json.loads((target / "doc/qga_harness.json").read_text())


def kind_of(item: dict) -> str:
    return next(iter(item["inner"])) if isinstance(item["inner"], dict) else item["inner"]


def walk(doc: dict) -> dict:
    """Maps each reachable item id to the first path it is reachable by."""
    index = doc["index"]
    seen: dict = {}
    stack = [(str(doc["root"]), [doc["index"][str(doc["root"])]["name"]])]
    while stack:
        item_id, path = stack.pop()
        item = index.get(item_id)
        if item is None:
            continue  # an item of another crate, re-exported: not ours to count
        kind = kind_of(item)
        if kind == "use":
            use = item["inner"]["use"]
            target = use.get("id")
            if target is None:
                continue
            if use.get("is_glob"):
                module = index.get(str(target))
                if module and kind_of(module) == "module":
                    for child in module["inner"]["module"]["items"]:
                        child_item = index.get(str(child))
                        if child_item and child_item.get("visibility") == "public":
                            # The glob's own entry ends the path (it has no name): its
                            # items sit beside it.
                            stack.append((str(child), path[:-1] + [child_item.get("name") or "?"]))
            else:
                stack.append((str(target), path[:-1] + [use["name"]]))
            continue
        if item_id in seen or kind not in KINDS:
            continue
        seen[item_id] = "::".join(path)
        if kind == "module":
            for child in item["inner"]["module"]["items"]:
                child_item = index.get(str(child))
                if child_item and child_item.get("visibility") == "public":
                    stack.append((str(child), path + [child_item.get("name") or "?"]))
    return seen


def main() -> None:
    doc = build()
    seen = walk(doc)
    paths = sorted(seen.values())
    internals = [p for p in paths if p.startswith("qga_harness::internals")]
    if "--list" in sys.argv:
        print("\n".join(paths))
    print(f"public items reachable from the crate root: {len(paths)}")
    print(f"  of which under qga_harness::internals (not the stable API): {len(internals)}")
    print(f"  the stable surface: {len(paths) - len(internals)}")


if __name__ == "__main__":
    main()
