//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`): the `k8s\0` envelope around a
//! `runtime.Unknown {typeMeta, raw}`, decoded to the JSON form with the generated field tables in
//! `protobuf_schema.rs` (built-in kinds that kubectl and helm send typed; see `ROOTS` there).
//!
//! Go's protobuf encoder writes every non-pointer field, even when empty, and the wire format cannot tell a
//! pointer's zero from "unset", so empty strings, empty messages (except `emptyDir`) and zero/false scalars are
//! dropped, except for fields where zero means something (`replicas: 0`, `runAsUser: 0`, ...; see `KEEP_ZERO`).

use crate::protobuf_schema::{MESSAGES, ROOTS};
use crate::util::rfc3339;
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// A message: its name and fields.
pub struct M {
    pub name: &'static str,
    pub fields: &'static [F],
}

/// A field of a message.
pub struct F {
    pub tag: u32,
    pub json: &'static str,
    pub kind: K,
    pub repeated: bool,
}

/// How a field is encoded (the generator may emit any of these; not all occur in the current roots).
#[allow(dead_code)]
pub enum K {
    Str,
    Bytes,
    Bool,
    Int,
    F64,
    Msg(usize),
    Special(S),
    MapStr,
    MapBytes,
    MapMsg(usize),
    MapSpecial(S),
}

/// Messages with a JSON form of their own.
#[allow(dead_code)]
#[derive(Clone, Copy)]
pub enum S {
    Time,
    MicroTime,
    Duration,
    RawJson,
    Quantity,
    IntOrString,
}

/// Fields whose zero or false value is meaningful (Go pointers), kept when decoded.
const KEEP_ZERO: &[&str] = &[
    "replicas",
    "minReplicas",
    "automountServiceAccountToken",
    "immutable",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "privileged",
    "readOnlyRootFilesystem",
    "optional",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "backoffLimit",
    "parallelism",
    "completions",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "terminationGracePeriodSeconds",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "suspend",
    "defaultMode",
    "mode",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "leaseDurationSeconds",
    "leaseTransitions",
    "enableServiceLinks",
    "expirationSeconds",
    "allowVolumeExpansion",
    "shareProcessNamespace",
    "setHostnameAsFQDN",
    "hostUsers",
    "startingDeadlineSeconds",
    "gracePeriodSeconds",
    "orphanDependents",
    "priority",
    "targetCPUUtilizationPercentage",
    "publishNotReadyAddresses",
    "allocateLoadBalancerNodePorts",
];

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated field")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Next field: (tag, wire type, varint value or the bytes of a length-delimited/fixed field).
    fn field(&mut self) -> Result<(u32, u64, &'a [u8]), String> {
        let key = self.varint()?;
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => Ok((tag, self.varint()?, &[])),
            1 => Ok((tag, 0, self.bytes(8)?)),
            2 => {
                let n = self.varint()? as usize;
                Ok((tag, 0, self.bytes(n)?))
            }
            5 => Ok((tag, 0, self.bytes(4)?)),
            w => Err(format!("unsupported wire type {w}")),
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Decodes a protobuf-encoded object (with the `k8s\0` envelope) to its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut r = Reader { buf: inner, pos: 0 };
    while !r.done() {
        match r.field()? {
            (1, _, type_meta) => {
                let mut t = Reader {
                    buf: type_meta,
                    pos: 0,
                };
                while !t.done() {
                    match t.field()? {
                        (1, _, b) => api_version = String::from_utf8_lossy(b).into_owned(),
                        (2, _, b) => kind = String::from_utf8_lossy(b).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, _, b) => raw = b,
            _ => {}
        }
    }
    let &(_, _, index) = ROOTS
        .iter()
        .find(|(av, k, _)| *av == api_version && *k == kind)
        .ok_or_else(|| format!("no protobuf schema for {api_version} {kind}"))?;
    let mut obj = message(index, raw)?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    if let Value::Object(m) = &mut obj {
        out.append(m);
    }
    Ok(Value::Object(out))
}

fn message(index: usize, buf: &[u8]) -> Result<Value, String> {
    let msg = &MESSAGES[index];
    let mut out = Map::new();
    let mut r = Reader { buf, pos: 0 };
    while !r.done() {
        let (tag, varint, bytes) = r.field()?;
        let Some(f) = msg.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let values: Vec<Value> = match &f.kind {
            K::Str => vec![json!(String::from_utf8_lossy(bytes))],
            K::Bytes => vec![json!(
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )],
            K::Bool => vec![json!(varint != 0)],
            K::Int if bytes.is_empty() => vec![json!(varint as i64)],
            // Packed repeated integers.
            K::Int => {
                let mut p = Reader { buf: bytes, pos: 0 };
                let mut v = Vec::new();
                while !p.done() {
                    v.push(json!(p.varint()? as i64));
                }
                v
            }
            K::F64 => vec![json!(f64::from_le_bytes(
                bytes.try_into().map_err(|_| "bad double")?
            ))],
            K::Msg(i) => {
                vec![message(*i, bytes).map_err(|e| format!("{}.{}: {e}", msg.name, f.json))?]
            }
            K::Special(s) => vec![special(*s, bytes)?],
            K::MapStr | K::MapBytes | K::MapMsg(_) | K::MapSpecial(_) => {
                let (k, v) = map_entry(&f.kind, bytes)?;
                let entry = out.entry(f.json.to_string()).or_insert_with(|| json!({}));
                entry[k] = v;
                continue;
            }
        };
        for v in values {
            if f.repeated {
                out.entry(f.json.to_string())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .ok_or("repeated field clash")?
                    .push(v);
            } else if INLINE.contains(&f.json)
                && let Value::Object(fields) = v
            {
                out.extend(fields);
            } else if keep(f.json, &v) {
                out.insert(f.json.to_string(), v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Embedded Go structs tagged `json:",inline"`: a field of their own in protobuf, their fields
/// directly in the parent's JSON (`Volume.VolumeSource`, `ConfigMapVolumeSource.LocalObjectReference`, ...
/// in kubernetes `staging/src/k8s.io/api/core/v1/types.go`).
const INLINE: &[&str] = &[
    "volumeSource",
    "localObjectReference",
    "persistentVolumeSource",
    "ephemeralContainerCommon",
];

fn keep(name: &str, v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Bool(b) => *b || KEEP_ZERO.contains(&name),
        Value::Number(n) => n.as_f64() != Some(0.0) || KEEP_ZERO.contains(&name),
        Value::Object(m) => !m.is_empty() || name == "emptyDir",
        Value::Array(_) => true,
    }
}

fn map_entry(kind: &K, buf: &[u8]) -> Result<(String, Value), String> {
    let mut r = Reader { buf, pos: 0 };
    let (mut key, mut value) = (String::new(), None);
    while !r.done() {
        match r.field()? {
            (1, _, b) => key = String::from_utf8_lossy(b).into_owned(),
            (2, _, b) => {
                value = Some(match kind {
                    K::MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(b)),
                    K::MapMsg(i) => message(*i, b)?,
                    K::MapSpecial(s) => special(*s, b)?,
                    _ => json!(String::from_utf8_lossy(b)),
                })
            }
            _ => {}
        }
    }
    let value = value.unwrap_or_else(|| match kind {
        K::MapMsg(_) => json!({}),
        _ => json!(""),
    });
    Ok((key, value))
}

fn special(s: S, buf: &[u8]) -> Result<Value, String> {
    let mut r = Reader { buf, pos: 0 };
    let (mut ints, mut strs): ([i64; 4], [String; 4]) = ([0; 4], Default::default());
    let mut raw = &[][..];
    while !r.done() {
        let (tag, varint, bytes) = r.field()?;
        if (tag as usize) < 4 {
            ints[tag as usize] = varint as i64;
            strs[tag as usize] = String::from_utf8_lossy(bytes).into_owned();
            if tag == 1 {
                raw = bytes;
            }
        }
    }
    Ok(match s {
        S::Time if ints[1] == 0 => Value::Null,
        S::Time => json!(rfc3339(ints[1], None)),
        S::MicroTime if ints[1] == 0 => Value::Null,
        S::MicroTime => json!(rfc3339(ints[1], Some((ints[2] / 1000) as u32))),
        S::Duration => json!(format!("{}s", ints[1] / 1_000_000_000)),
        S::Quantity => json!(strs[1]),
        S::IntOrString if ints[1] == 1 => json!(strs[3]),
        S::IntOrString => json!(ints[2]),
        S::RawJson if raw.is_empty() => Value::Null,
        S::RawJson => serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((tag << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_secret() {
        let meta = [field(1, b"s1"), field(3, b"demo"), field(2, b"")].concat();
        let data = [field(1, b"a"), field(2, b"hello")].concat();
        let secret = [field(1, &meta), field(2, &data), field(3, b"Opaque")].concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let unknown = [field(1, &type_meta), field(2, &secret)].concat();
        let body = [b"k8s\0".to_vec(), unknown].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1", "namespace": "demo"}, "data": {"a": "aGVsbG8="}, "type": "Opaque"})
        );
    }
}
