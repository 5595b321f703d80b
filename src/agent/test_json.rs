//! A small JSON reader for the agent's unit tests that, unlike serde_json, keeps object
//! members in input order (the order QEMU's parser inserts them in) and classifies numbers
//! as QEMU does: int64, else uint64, else double.

use crate::wire::{Object, Value};

pub(crate) fn parse(text: &str) -> Value {
    let mut reader = Reader {
        bytes: text.as_bytes(),
        at: 0,
    };
    let value = reader.value();
    reader.skip_ws();
    assert_eq!(reader.at, reader.bytes.len(), "trailing input in {text}");
    value
}

pub(crate) fn object(text: &str) -> Object {
    match parse(text) {
        Value::Object(o) => o,
        other => panic!("not an object: {other:?}"),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> u8 {
        self.bytes.get(self.at).copied().unwrap_or(0)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\t' | b'\r') {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) {
        self.skip_ws();
        assert_eq!(self.peek(), byte, "at {}", self.at);
        self.at += 1;
    }

    fn value(&mut self) -> Value {
        self.skip_ws();
        match self.peek() {
            b'{' => {
                self.at += 1;
                let mut object = Object::new();
                self.skip_ws();
                if self.peek() == b'}' {
                    self.at += 1;
                    return Value::Object(object);
                }
                loop {
                    self.skip_ws();
                    let key = self.string();
                    self.expect(b':');
                    let value = self.value();
                    assert!(!object.contains_key(&key), "duplicate key {key}");
                    object.insert(key, value);
                    self.skip_ws();
                    match self.peek() {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Value::Object(object);
                        }
                        other => panic!("bad object at {}: {}", self.at, other as char),
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == b']' {
                    self.at += 1;
                    return Value::Array(items);
                }
                loop {
                    items.push(self.value());
                    self.skip_ws();
                    match self.peek() {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Value::Array(items);
                        }
                        other => panic!("bad array at {}: {}", self.at, other as char),
                    }
                }
            }
            b'"' => Value::String(self.string()),
            b't' => self.keyword("true", Value::Bool(true)),
            b'f' => self.keyword("false", Value::Bool(false)),
            b'n' => self.keyword("null", Value::Null),
            _ => self.number(),
        }
    }

    fn keyword(&mut self, word: &str, value: Value) -> Value {
        assert!(self.bytes[self.at..].starts_with(word.as_bytes()));
        self.at += word.len();
        value
    }

    fn number(&mut self) -> Value {
        let start = self.at;
        while matches!(self.peek(), b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).expect("ascii");
        let integral = !text.contains(['.', 'e', 'E']);
        if integral {
            if let Ok(i) = text.parse::<i64>() {
                return Value::Int(i);
            }
            if let Ok(u) = text.parse::<u64>() {
                return Value::UInt(u);
            }
        }
        Value::Float(text.parse().expect("number"))
    }

    fn string(&mut self) -> String {
        assert_eq!(self.peek(), b'"');
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let b = self.peek();
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.peek();
                    self.at += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.bytes[self.at..self.at + 4])
                                .expect("hex");
                            self.at += 4;
                            let code = u32::from_str_radix(hex, 16).expect("hex");
                            let c = char::from_u32(code).expect("BMP scalar");
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        String::from_utf8(out).expect("utf-8")
    }
}
