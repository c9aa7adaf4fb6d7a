#!/usr/bin/env python3
"""Checks api/openapi.yaml against docs/control-plane.md (the contract).

Fails (exit 1, naming each problem) when: the file does not parse or is not OpenAPI 3.0.3;
an endpoint of the document's "ferryd API" table (method and path, e.g. GET `/api/v1/vms?host=H`)
is missing, or a query parameter it shows is not declared; an operation lacks an error
response; a $ref points nowhere; a schema the document names is missing.

Usage: check_openapi.py OPENAPI_YAML CONTROL_PLANE_MD
"""
import re
import sys

import yaml

REQUIRED_SCHEMAS = [
    "Host", "HostFacts", "VM", "Disk", "Nic", "Pool", "Network", "MigrationRequest",
    "Migration", "JobProgress", "JobResult", "Check", "Event", "Error",
    "Plan", "PlanValidation", "ShareVm",
]
METHODS = ("get", "post", "put", "delete", "patch")


def doc_endpoints(markdown):
    """(METHOD, path, [query names]) rows of the '## ferryd API' section's table."""
    section = re.search(r"^## ferryd API.*?(?=^## |\Z)", markdown, re.M | re.S)
    if not section:
        raise SystemExit("control-plane.md: no '## ferryd API' section")
    rows = []
    for m in re.finditer(r"^\|\s*(GET|POST|PUT|DELETE|PATCH)\s+`([^`]+)`", section.group(0), re.M):
        path, _, query = m.group(2).partition("?")
        names = [q.split("=")[0] for q in query.split("&") if q]
        rows.append((m.group(1), path, names))
    if len(rows) < 10:
        raise SystemExit("control-plane.md: found only %d endpoints in the ferryd API table"
                         % len(rows))
    return rows


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def resolve(spec, ref):
    if not ref.startswith("#/"):
        return None
    node = spec
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def main():
    spec_path, doc_path = sys.argv[1], sys.argv[2]
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    with open(doc_path, encoding="utf-8") as f:
        doc = f.read()
    problems = []
    if not isinstance(spec, dict) or spec.get("openapi") != "3.0.3":
        raise SystemExit("%s: not an OpenAPI 3.0.3 document" % spec_path)
    paths = spec.get("paths") or {}
    schemes = (spec.get("components") or {}).get("securitySchemes") or {}
    if schemes.get("bearerAuth", {}).get("scheme") != "bearer":
        problems.append("components.securitySchemes.bearerAuth is not an http bearer scheme")
    if {"bearerAuth": []} not in (spec.get("security") or []):
        problems.append("bearerAuth is not the default security requirement")

    for method, path, query in doc_endpoints(doc):
        item = paths.get(path)
        if item is None:
            problems.append("missing path %s (%s in control-plane.md)" % (path, method))
            continue
        op = item.get(method.lower())
        if op is None:
            problems.append("missing operation %s %s" % (method, path))
            continue
        declared = set()
        params = []
        for holder in (item, op):
            listed = holder.get("parameters") or []
            if not isinstance(listed, list):
                problems.append("%s %s: parameters is not a list" % (method, path))
                listed = []
            params += [p for p in listed if isinstance(p, dict)]
        for p in params:
            p = resolve(spec, p["$ref"]) if "$ref" in p else p
            if isinstance(p, dict):
                declared.add((p.get("in"), p.get("name")))
                if p.get("in") == "path" and ("{%s}" % p.get("name")) not in path:
                    problems.append("%s %s: path parameter %s not in the path"
                                    % (method, path, p.get("name")))
        for name in re.findall(r"{([^}]+)}", path):
            if ("path", name) not in declared:
                problems.append("%s %s: path parameter %s not declared" % (method, path, name))
        for name in query:
            if ("query", name) not in declared:
                problems.append("%s %s: query parameter %s not declared" % (method, path, name))
        codes = [str(c) for c in (op.get("responses") or {})]
        if not any(c.startswith("2") for c in codes):
            problems.append("%s %s: no success response" % (method, path))
        if "401" not in codes:
            problems.append("%s %s: no 401 response" % (method, path))

    for path, item in paths.items():
        for method in METHODS:
            if method in item and not any(
                    str(c)[0] in "45" for c in (item[method].get("responses") or {})):
                problems.append("%s %s: no error response" % (method.upper(), path))

    for ref in set(refs(spec)):
        if resolve(spec, ref) is None:
            problems.append("dangling $ref " + ref)
    schemas = (spec.get("components") or {}).get("schemas") or {}
    for name in REQUIRED_SCHEMAS:
        if name not in schemas:
            problems.append("missing schema " + name)
    if "checks" not in str(schemas.get("ValidationError", "")):
        problems.append("the validation failure (422) does not carry details.checks")

    for p in problems:
        print("openapi: " + p, file=sys.stderr)
    if problems:
        return 1
    print("openapi: %d paths, %d schemas, matches control-plane.md" % (len(paths), len(schemas)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
