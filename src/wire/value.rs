//! The JSON value model of QEMU's QObject.
//!
//! serde_json's `Value` cannot stand in for it: QEMU keeps integers as int64 or uint64
//! and everything else as a double, accepts `\u0000` in strings, and writes object keys
//! in QDict hash order, which depends on the order the keys were inserted. So objects
//! here keep their insertion order, and the writer derives the hash order from it.

use std::fmt;

/// A parsed or constructed QObject.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A number that fits in int64 (QEMU's `QNUM_I64`).
    Int(i64),
    /// A number above `i64::MAX` that fits in uint64 (`QNUM_U64`).
    UInt(u64),
    /// Any other number (`QNUM_DOUBLE`).
    Float(f64),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON object whose members keep their insertion order.
///
/// Insertion order matters twice: the writer orders keys by QDict bucket and, within a
/// bucket, newest first; and QEMU's argument checks report the first leftover member in
/// a hash order that also depends on it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object {
    members: Vec<(String, Value)>,
}

impl Object {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            members: Vec::with_capacity(n),
        }
    }

    /// Appends a member, or replaces the value of an existing key in place (as
    /// `qdict_put` does: the key keeps its original insertion position).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if let Some(slot) = self.members.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.members.push((key, value));
        }
    }

    /// Appends a member whose key the caller knows is not present yet (the parser checks
    /// for duplicates itself, with an index for large objects).
    pub(crate) fn push_new(&mut self, key: String, value: Value) {
        self.members.push((key, value));
    }

    /// Members in insertion order, as a slice.
    pub(crate) fn members(&self) -> &[(String, Value)] {
        &self.members
    }

    /// Builder form of [`Object::insert`].
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: Value) -> Self {
        self.insert(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(at).1)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_str())
    }

    /// Members in QDict iteration order: the order qemu-ga writes them in, and the order
    /// QEMU walks a QDict in (`qdict_first`/`qdict_next`), e.g. when the dispatcher checks
    /// the members of a request. Ascending `tdb_hash(key) % 512`, and within one bucket the
    /// newest insertion first.
    pub fn iter_qdict_order(&self) -> impl Iterator<Item = (&str, &Value)> {
        let mut order = vec![(0, 0); self.members.len()];
        super::writer::qdict_order(self, &mut order);
        order
            .into_iter()
            .filter_map(move |(_, index)| self.members.get(index))
            .map(|(k, v)| (k.as_str(), v))
    }
}

impl FromIterator<(String, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut object = Object::new();
        for (k, v) in iter {
            object.insert(k, v);
        }
        object
    }
}

impl Value {
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as int64, as QEMU's `qnum_get_try_int` sees it: doubles never are.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The value as uint64, as QEMU's `qnum_get_try_uint` sees it.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            _ => None,
        }
    }

    /// Any number as a double (`qnum_get_double`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Converts to serde_json, for callers that do not care about QEMU's number
    /// classes or key order. `inf` and `nan` become `null`, as serde_json has no form for them.
    pub fn to_serde(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Array(a) => J::Array(a.iter().map(Value::to_serde).collect()),
            Value::Object(o) => J::Object(
                o.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_serde()))
                    .collect(),
            ),
        }
    }

    /// Converts from serde_json. Object members keep serde_json's iteration order.
    pub fn from_serde(value: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match value {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::String(s.clone()),
            J::Array(a) => Value::Array(a.iter().map(Value::from_serde).collect()),
            J::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_serde(v)))
                    .collect(),
            ),
        }
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(o)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    fn from(u: u64) -> Self {
        i64::try_from(u).map_or(Value::UInt(u), Value::Int)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

impl fmt::Display for Value {
    /// Writes the value as qemu-ga would (see `wire::writer`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        super::write_json(self, &mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}
