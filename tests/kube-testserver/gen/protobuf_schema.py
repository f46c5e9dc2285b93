#!/usr/bin/env python3
"""Generates src/protobuf_schema.rs: field tables for decoding Kubernetes protobuf request bodies.

Reads the prost structs of the `k8s-pb` crate (field numbers and wire types) and the JSON field names of the
`k8s-openapi` crate (to turn `cluster_ip` back into `clusterIP`), for the root kinds listed below and every
message they reach. Run from anywhere: `python3 tests/kube-testserver/gen/protobuf_schema.py`.
"""
import glob
import os
import re
import sys

HOME = os.path.expanduser("~")
PB = sorted(glob.glob(f"{HOME}/.cargo/registry/src/*/k8s-pb-0.9.0/src"))[-1]
OA = sorted(glob.glob(f"{HOME}/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_35"))[-1]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "protobuf_schema.rs")

# (apiVersion, kind) -> prost message path
ROOTS = [
    ("v1", "Secret", "api.core.v1.Secret"),
    ("v1", "ConfigMap", "api.core.v1.ConfigMap"),
    ("v1", "Namespace", "api.core.v1.Namespace"),
    ("v1", "ServiceAccount", "api.core.v1.ServiceAccount"),
    ("v1", "Service", "api.core.v1.Service"),
    ("v1", "Pod", "api.core.v1.Pod"),
    ("v1", "Endpoints", "api.core.v1.Endpoints"),
    ("v1", "Event", "api.core.v1.Event"),
    ("v1", "PersistentVolumeClaim", "api.core.v1.PersistentVolumeClaim"),
    ("v1", "Node", "api.core.v1.Node"),
    ("v1", "ResourceQuota", "api.core.v1.ResourceQuota"),
    ("apps/v1", "Deployment", "api.apps.v1.Deployment"),
    ("apps/v1", "StatefulSet", "api.apps.v1.StatefulSet"),
    ("apps/v1", "DaemonSet", "api.apps.v1.DaemonSet"),
    ("apps/v1", "ReplicaSet", "api.apps.v1.ReplicaSet"),
    ("batch/v1", "Job", "api.batch.v1.Job"),
    ("batch/v1", "CronJob", "api.batch.v1.CronJob"),
    ("rbac.authorization.k8s.io/v1", "Role", "api.rbac.v1.Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "api.rbac.v1.RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "api.rbac.v1.ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "api.rbac.v1.ClusterRoleBinding"),
    ("coordination.k8s.io/v1", "Lease", "api.coordination.v1.Lease"),
    ("policy/v1", "PodDisruptionBudget", "api.policy.v1.PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress", "api.networking.v1.Ingress"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "api.autoscaling.v2.HorizontalPodAutoscaler"),
    ("autoscaling/v1", "HorizontalPodAutoscaler", "api.autoscaling.v1.HorizontalPodAutoscaler"),
    ("authentication.k8s.io/v1", "TokenRequest", "api.authentication.v1.TokenRequest"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", "api.authorization.v1.SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview", "api.authorization.v1.SelfSubjectRulesReview"),
    ("meta.k8s.io/v1", "DeleteOptions", "apimachinery.pkg.apis.meta.v1.DeleteOptions"),
    ("v1", "DeleteOptions", "apimachinery.pkg.apis.meta.v1.DeleteOptions"),
]

# Messages decoded specially (not by table).
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "Time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "apimachinery.pkg.runtime.RawExtension": "RawJson",
    "apimachinery.pkg.api.resource.Quantity": "Quantity",
    "apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
}

STRUCT_RE = re.compile(r"^pub struct (\w+) \{$")
ATTR_RE = re.compile(r'#\[prost\((.*)tag = "(\d+)"\)\]')
FIELD_RE = re.compile(r"^pub (r#)?(\w+): (.*),$")


def parse():
    messages = {}
    for path in glob.glob(f"{PB}/**/mod.rs", recursive=True):
        module = os.path.relpath(os.path.dirname(path), PB).replace(os.sep, ".")
        lines = [l.strip() for l in open(path, encoding="utf-8")]
        i = 0
        current = None
        while i < len(lines):
            line = lines[i]
            m = STRUCT_RE.match(line)
            if m:
                current = f"{module}.{m.group(1)}"
                messages[current] = {"module": module, "fields": []}
            elif line == "}":
                current = None
            elif current and line.startswith("#[prost("):
                attr = ATTR_RE.match(line)
                # The field declaration may wrap over several lines.
                decl = lines[i + 1]
                j = i + 1
                while not (decl.endswith(",") and decl.count("<") == decl.count(">")):
                    j += 1
                    decl = decl + " " + lines[j]
                fm = FIELD_RE.match(decl)
                if attr and fm:
                    messages[current]["fields"].append((attr.group(1), int(attr.group(2)), fm.group(2), fm.group(3)))
                i = j
            i += 1
    return messages


def resolve(module, rust_type):
    """Resolves the message path a Rust field type refers to."""
    t = rust_type.replace(" ", "")
    for wrapper in ["::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"]:
        t = t.replace(wrapper, "")
    t = t.rstrip(">,")
    if "BTreeMap<" in t:
        t = [p for p in t.split(",") if p][-1]
    parts = t.split("::")
    mod = module.split(".")
    while parts and parts[0] == "super":
        parts.pop(0)
        mod.pop()
    return ".".join(mod + parts)


def json_names():
    names = {}
    key_re = re.compile(r'^\s*"([^"]+)" => Field::Key_(\w+),')
    for path in glob.glob(f"{OA}/**/*.rs", recursive=True):
        for line in open(path, encoding="utf-8"):
            m = key_re.match(line)
            if m:
                names.setdefault(m.group(1).replace("_", "").replace("-", "").replace("$", "").lower(), m.group(1))
    return names


def main():
    messages = parse()
    names = json_names()
    order = []
    index = {}

    def visit(path):
        if path in index or path in SPECIAL:
            return
        if path not in messages:
            sys.exit(f"unknown message {path}")
        index[path] = len(order)
        order.append(path)
        for attr, _tag, _name, rust_type in messages[path]["fields"]:
            if "message" in attr:
                visit(resolve(messages[path]["module"], rust_type))

    for _av, _kind, path in ROOTS:
        visit(path)

    def kind_of(msg_path, attr, rust_type):
        if "btree_map" in attr:
            value = attr.split('"')[1].split(",")[1].strip()
            if value == "string":
                return "K::MapStr"
            if value == "bytes":
                return "K::MapBytes"
            target = resolve(messages[msg_path]["module"], rust_type)
            return f"K::MapSpecial(S::{SPECIAL[target]})" if target in SPECIAL else f"K::MapMsg({index[target]})"
        base = attr.split(",")[0].strip()
        if base.startswith("bytes"):
            return "K::Bytes"
        simple = {"string": "K::Str", "bool": "K::Bool", "int32": "K::Int", "int64": "K::Int", "double": "K::F64"}
        if base in simple:
            return simple[base]
        if base == "message":
            target = resolve(messages[msg_path]["module"], rust_type)
            return f"K::Special(S::{SPECIAL[target]})" if target in SPECIAL else f"K::Msg({index[target]})"
        sys.exit(f"unsupported prost attribute {attr}")

    out = [
        "//! Generated by `gen/protobuf_schema.py` from k8s-pb 0.9 (field numbers) and k8s-openapi 0.29 (JSON names).",
        "//! Do not edit by hand.",
        "",
        "use crate::protobuf::{F, K, M, S};",
        "",
        "/// (apiVersion, kind, index into `MESSAGES`).",
        "pub const ROOTS: &[(&str, &str, usize)] = &[",
    ]
    for av, kind, path in ROOTS:
        out.append(f'    ("{av}", "{kind}", {index[path]}),')
    out.append("];")
    out.append("")
    out.append("pub const MESSAGES: &[M] = &[")
    for path in order:
        out.append(f'    M {{ name: "{path.rsplit(".", 1)[1]}", fields: &[')
        for attr, tag, name, rust_type in messages[path]["fields"]:
            norm = name.replace("_", "").lower()
            json = names.get(norm)
            if name == "ref":
                json = "$ref"
            if json is None:
                # camelCase fallback
                head, *rest = name.split("_")
                json = head + "".join(p[:1].upper() + p[1:] for p in rest)
            rep = "true" if "repeated" in attr else "false"
            out.append(f'        F {{ tag: {tag}, json: "{json}", kind: {kind_of(path, attr, rust_type)}, repeated: {rep} }},')
        out.append("    ] },")
    out.append("];")
    open(OUT, "w", encoding="utf-8").write("\n".join(out) + "\n")
    print(f"wrote {len(order)} messages to {os.path.normpath(OUT)}")


main()
