//! Responses as etcdctl's `-w json` prints them: Go's `encoding/json` applied to the
//! gogoproto structs. That is the proto field names in declaration order, zero values left
//! out, 64-bit integers and enums as numbers, bytes as base64, and a oneof as an object
//! named after the oneof holding one object named after its field (both in Go's
//! CamelCase). The message is first written by its serde form (pbjson: proto names,
//! 64-bit integers as strings, enums by name) and then rewritten by its descriptor.

use std::collections::HashMap;
use std::fmt::Write as _;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde_json::Value;

/// Every message and enum of oxcd's protos, by full name (`.etcdserverpb.RangeResponse`).
pub struct Schema {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, EnumDescriptorProto>,
}

impl Schema {
    pub fn load() -> Schema {
        let set = FileDescriptorSet::decode(oxcd::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into the binary decodes");
        let mut schema = Schema {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in set.file {
            let package = format!(".{}", file.package());
            for message in file.message_type {
                schema.add_message(&package, message);
            }
            for kind in file.enum_type {
                schema
                    .enums
                    .insert(format!("{package}.{}", kind.name()), kind);
            }
        }
        schema
    }

    fn add_message(&mut self, scope: &str, message: DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested.clone());
        }
        for kind in &message.enum_type {
            self.enums
                .insert(format!("{name}.{}", kind.name()), kind.clone());
        }
        self.messages.insert(name, message);
    }

    /// `message` (of the proto type `type_name`) as Go's `json.Marshal` writes it.
    pub fn to_go_json<M: serde::Serialize>(&self, message: &M, type_name: &str) -> String {
        let value = serde_json::to_value(message).unwrap_or(Value::Null);
        let mut out = String::new();
        self.write_message(&value, type_name, &mut out);
        out
    }

    /// The object of a message, without its braces (for structs that embed one).
    pub fn go_json_fields<M: serde::Serialize>(&self, message: &M, type_name: &str) -> String {
        let text = self.to_go_json(message, type_name);
        text[1..text.len() - 1].to_string()
    }

    fn write_message(&self, value: &Value, type_name: &str, out: &mut String) {
        let (Some(object), Some(descriptor)) = (value.as_object(), self.messages.get(type_name))
        else {
            out.push_str("null");
            return;
        };
        out.push('{');
        let mut first = true;
        let mut separator = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
        };
        let mut oneofs_written = Vec::new();
        for field in &descriptor.field {
            let oneof = field.oneof_index.filter(|_| !field.proto3_optional());
            if let Some(index) = oneof {
                if oneofs_written.contains(&index) {
                    continue;
                }
                oneofs_written.push(index);
                let name = descriptor.oneof_decl[index as usize].name();
                separator(out);
                let _ = write!(out, "\"{}\":", go_name(name));
                let set = descriptor
                    .field
                    .iter()
                    .filter(|member| member.oneof_index == Some(index))
                    .find_map(|member| object.get(member.name()).map(|value| (member, value)));
                match set {
                    Some((member, value)) => {
                        let _ = write!(out, "{{\"{}\":", go_name(member.name()));
                        self.write_value(value, member, out);
                        out.push('}');
                    }
                    None => out.push_str("null"),
                }
                continue;
            }
            let Some(value) = object.get(field.name()) else {
                continue;
            };
            separator(out);
            let _ = write!(out, "\"{}\":", field.name());
            if field.label() == Label::Repeated {
                out.push('[');
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write_value(item, field, out);
                }
                out.push(']');
            } else {
                self.write_value(value, field, out);
            }
        }
        out.push('}');
    }

    fn write_value(
        &self,
        value: &Value,
        field: &prost_types::FieldDescriptorProto,
        out: &mut String,
    ) {
        match field.r#type() {
            Type::Message | Type::Group => self.write_message(value, field.type_name(), out),
            Type::Enum => match value {
                Value::String(name) => {
                    let number = self
                        .enums
                        .get(field.type_name())
                        .and_then(|kind| kind.value.iter().find(|v| v.name() == name))
                        .map_or(0, |v| v.number());
                    let _ = write!(out, "{number}");
                }
                other => out.push_str(&other.to_string()),
            },
            Type::String => match value {
                Value::String(text) => out.push_str(&oxcd::server::go_string(text)),
                other => out.push_str(&other.to_string()),
            },
            // 64-bit integers come as strings from pbjson; Go writes them as numbers.
            _ => match value {
                Value::String(text) if field.r#type() != Type::Bytes => out.push_str(text),
                other => out.push_str(&other.to_string()),
            },
        }
    }
}

/// A proto name in the CamelCase of Go's generated code: `response_put` → `ResponsePut`.
fn go_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxcd::proto::etcdserverpb::{response_op, PutResponse, ResponseHeader, ResponseOp};
    use oxcd::proto::etcdserverpb::{RangeResponse, TxnResponse};
    use oxcd::proto::mvccpb::KeyValue;

    fn header() -> ResponseHeader {
        ResponseHeader {
            cluster_id: 15118495548433857066,
            member_id: 13668033151171901709,
            revision: 3,
            raft_term: 2,
        }
    }

    #[test]
    fn a_range_response_reads_as_etcdctl_prints_it() {
        let schema = Schema::load();
        let response = RangeResponse {
            header: Some(header()),
            kvs: vec![KeyValue {
                key: "foo".into(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: "bar".into(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            schema.to_go_json(&response, ".etcdserverpb.RangeResponse"),
            r#"{"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":3,"raft_term":2},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"YmFy"}],"count":1}"#
        );
    }

    #[test]
    fn a_oneof_is_wrapped_in_go_names() {
        let schema = Schema::load();
        let response = TxnResponse {
            header: Some(header()),
            succeeded: true,
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponsePut(PutResponse {
                    header: Some(ResponseHeader {
                        revision: 3,
                        ..Default::default()
                    }),
                    prev_kv: None,
                })),
            }],
        };
        let json = schema.to_go_json(&response, ".etcdserverpb.TxnResponse");
        assert!(
            json.ends_with(
                r#""succeeded":true,"responses":[{"Response":{"ResponsePut":{"header":{"revision":3}}}}]}"#
            ),
            "{json}"
        );
    }

    #[test]
    fn go_names_are_camel_case() {
        assert_eq!(go_name("response_delete_range"), "ResponseDeleteRange");
        assert_eq!(go_name("target_union"), "TargetUnion");
    }
}
