//! JSON text as Go's `encoding/json` writes it, for the answers that clients compare byte
//! for byte with etcd's (health, v2, the member records of an etcd snapshot).

use std::fmt::Write as _;

/// `text` as a JSON string literal, escaped as Go escapes it: `<`, `>`, `&`, U+2028 and
/// U+2029 too.
pub fn go_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON array of strings, escaped as [`go_string`] escapes them.
pub(crate) fn go_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| go_string(item)).collect();
    format!("[{}]", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_as_go_escapes_them() {
        assert_eq!(go_string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(go_string("<&>"), r#""\u003c\u0026\u003e""#);
        assert_eq!(go_string("\u{1}é"), "\"\\u0001é\"");
        assert_eq!(go_strings(&["x".into(), "y".into()]), r#"["x","y"]"#);
    }
}
