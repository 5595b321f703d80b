#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/TARGET/ from the
scenario catalogue (scenarios/), the built-in profile and the fidelity inputs
(tests/fidelity/cases.rs). Run from the repository root; then minimise each with
`cargo +nightly fuzz cmin TARGET seeds/TARGET` (from fuzz/) before committing."""

import hashlib
import json
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


requests = []
for path in sorted((root / "scenarios").rglob("*.json")):
    if "baselines" in path.parts:
        continue
    text = path.read_text()
    put("scenario", text)
    doc = json.loads(text)
    agent = doc.get("agent", {})
    if isinstance(agent.get("profile"), dict):
        put("profile", json.dumps(agent["profile"], indent=1))
    for fault in agent.get("faults", []):
        put("fault_spec", fault if isinstance(fault, str) else json.dumps(fault))
    for step in doc.get("steps", []):
        if "execute" in step:
            req = {"execute": step["execute"]}
            if "arguments" in step:
                req["arguments"] = step["arguments"]
            requests.append(json.dumps(req).encode())

put("profile", (root / "src" / "guest" / "default_linux.json").read_text())

# The fidelity inputs: every raw string literal of the case table.
cases = (root / "tests" / "fidelity" / "cases.rs").read_text()
for literal in re.findall(r'r#"(.*?)"#', cases, re.S):
    requests.append(literal.encode())
for literal in re.findall(r'b"((?:[^"\\]|\\.)*)"', cases):
    requests.append(literal.encode().decode("unicode_escape").encode("latin-1"))

for req in requests:
    put("wire", req)
    # The structured targets read their input through `arbitrary`: raw requests still
    # steer the generators toward protocol-shaped choices.
    put("dispatch", req)
for n in range(8):
    put("client", bytes(range(n * 16, n * 16 + 64)))
    put("client", bytes([n]) * 64)
