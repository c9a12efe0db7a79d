//! Keys and values are byte strings.
//!
//! etcd keys and values are arbitrary bytes, and range ends such as `"\xff"`
//! are common. The history types hold them in `String`s, **one byte per
//! character** (U+0000 to U+00FF, as Latin-1 does): comparing two such strings
//! compares the bytes, and a range end is computed byte by byte. Use
//! [`from_bytes`] and [`to_bytes`] to build and read them.
//!
//! In a history file a key, range end or value is written either as plain JSON
//! text (`"key": "k1"`, taken as its UTF-8 bytes) or as standard base64 of the
//! raw bytes (`"key_b64": "/w=="`); writing one out uses the plain form when
//! the bytes are valid UTF-8 and base64 otherwise, so every byte string round-trips.

use serde_json::{Map, Value};

/// The fields that hold byte strings (wherever they occur) and may instead be
/// given base64-encoded under the same name with `_b64` appended.
const BYTE_FIELDS: [(&str, &str); 3] = [
    ("key", "key_b64"),
    ("range_end", "range_end_b64"),
    ("value", "value_b64"),
];

/// The in-memory form of `bytes`: one character per byte.
pub fn from_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The in-memory form of UTF-8 text (its bytes).
pub fn from_text(text: &str) -> String {
    from_bytes(text.as_bytes())
}

/// The bytes an in-memory string stands for; `Err` names a character above
/// U+00FF, which no byte string holds.
pub fn to_bytes(s: &str) -> Result<Vec<u8>, char> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| c))
        .collect()
}

/// A readable form for messages: the text when the bytes are UTF-8, else the
/// bytes escaped.
pub fn display(s: &str) -> String {
    match to_bytes(s) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => e
                .into_bytes()
                .iter()
                .flat_map(|b| std::ascii::escape_default(*b))
                .map(char::from)
                .collect(),
        },
        Err(_) => s.to_string(),
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2
        || (text.len() != trimmed.len() && !text.len().is_multiple_of(4))
    {
        return Err(format!("bad base64 padding in {text:?}"));
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in trimmed.bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or_else(|| format!("bad base64 character {:?} in {text:?}", char::from(c)))?;
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if trimmed.len() % 4 == 1 || acc != 0 {
        return Err(format!("bad base64 length or trailing bits in {text:?}"));
    }
    Ok(out)
}

/// Rewrites a parsed JSON record into the in-memory form: every byte field,
/// plain or `_b64`, becomes one character per byte. Giving a field both ways
/// is an error.
pub fn decode_tree(value: &mut Value) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            for (name, b64_name) in BYTE_FIELDS {
                decode_field(map, name, b64_name)?;
            }
            for child in map.values_mut() {
                decode_tree(child)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                decode_tree(item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode_field(map: &mut Map<String, Value>, name: &str, b64_name: &str) -> Result<(), String> {
    if let Some(encoded) = map.remove(b64_name) {
        if map.contains_key(name) {
            return Err(format!("both `{name}` and `{b64_name}` given"));
        }
        let Value::String(encoded) = encoded else {
            return Err(format!("`{b64_name}` must be a string"));
        };
        let bytes = base64_decode(&encoded).map_err(|e| format!("`{b64_name}`: {e}"))?;
        map.insert(name.to_string(), Value::String(from_bytes(&bytes)));
    } else if let Some(Value::String(text)) = map.get_mut(name) {
        if !text.is_ascii() {
            *text = from_text(text);
        }
    }
    Ok(())
}

/// The inverse of [`decode_tree`], for writing: a byte field whose bytes are
/// UTF-8 is written as text, any other as `_b64`. `Err` names a character
/// above U+00FF (a string not built as one character per byte).
pub fn encode_tree(value: &mut Value) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                encode_tree(child)?;
            }
            for (name, b64_name) in BYTE_FIELDS {
                let Some(Value::String(held)) = map.get(name) else {
                    continue;
                };
                if held.is_ascii() {
                    continue;
                }
                let bytes = to_bytes(held).map_err(|c| {
                    format!("`{name}` {held:?} holds {c:?}, above U+00FF: build byte strings with bytes::from_bytes")
                })?;
                match String::from_utf8(bytes) {
                    Ok(text) => {
                        map.insert(name.to_string(), Value::String(text));
                    }
                    Err(e) => {
                        map.remove(name);
                        map.insert(
                            b64_name.to_string(),
                            Value::String(base64_encode(e.as_bytes())),
                        );
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                encode_tree(item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..20u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(97).wrapping_add(200))
                .collect();
            let encoded = base64_encode(&bytes);
            assert_eq!(base64_decode(&encoded).unwrap(), bytes);
            assert_eq!(base64_decode(encoded.trim_end_matches('=')).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"\xff"), "/w==");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert!(base64_decode("/x==").is_err());
        assert!(base64_decode("a").is_err());
        assert!(base64_decode("a*==").is_err());
    }

    #[test]
    fn byte_strings_order_as_bytes() {
        let a = from_text("é");
        let b = from_bytes(&[0xc3, 0xaa]);
        assert_eq!(to_bytes(&a).unwrap(), vec![0xc3, 0xa9]);
        assert!(a < b);
        assert!(from_bytes(&[0x7f]) < from_bytes(&[0x80]));
        assert_eq!(display(&a), "é");
        assert_eq!(display(&from_bytes(&[0xff, b'a'])), "\\xffa");
    }

    #[test]
    fn trees_round_trip() {
        let mut tree: Value = serde_json::from_str(
            r#"{"key":"é","range_end_b64":"/w==","value":"v","kvs":[{"key_b64":"gA==","value":"x"}],"type":"get"}"#,
        )
        .unwrap();
        decode_tree(&mut tree).unwrap();
        assert_eq!(tree["key"], Value::String(from_text("é")));
        assert_eq!(tree["range_end"], Value::String(from_bytes(&[0xff])));
        assert_eq!(tree["kvs"][0]["key"], Value::String(from_bytes(&[0x80])));
        encode_tree(&mut tree).unwrap();
        assert_eq!(tree["key"], "é");
        assert_eq!(tree["range_end_b64"], "/w==");
        assert_eq!(tree["kvs"][0]["key_b64"], "gA==");
        let mut both: Value = serde_json::from_str(r#"{"key":"a","key_b64":"YQ=="}"#).unwrap();
        assert!(decode_tree(&mut both).is_err());
    }
}
