//! etcdctl's printers: `-w simple` (the default), `fields`, `json` and `table`, with its
//! layouts line for line. A format a verb has no layout for fails as etcdctl's does, after
//! the request ran ("table not supported as output format", exit 4).

use std::fmt::Write as _;
use std::sync::OnceLock;

use oxcd::proto::etcdserverpb as pb;
use oxcd::proto::mvccpb::{self, KeyValue};

use crate::gojson::Schema;
use crate::Failure;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Simple,
    Fields,
    Json,
    Table,
}

pub struct Printer {
    pub format: Format,
    /// `--hex`: keys and values as `\x..` escapes.
    pub hex: bool,
    /// `get --print-value-only`.
    pub value_only: bool,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(Schema::load)
}

/// `message` as `-w json` prints it.
pub fn json<M: serde::Serialize>(message: &M, type_name: &str) -> String {
    schema().to_go_json(message, &format!(".{type_name}"))
}

fn unsupported(format: Format) -> Failure {
    let name = match format {
        Format::Simple => "simple",
        Format::Fields => "fields",
        Format::Json => "json",
        Format::Table => "table",
    };
    Failure::bad_feature(format!("{name} not supported as output format"))
}

/// A string as Go's `%q` writes it.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut rest = bytes;
    while !rest.is_empty() {
        let (c, len) = match std::str::from_utf8(&rest[..rest.len().min(4)]) {
            Ok(text) => (
                text.chars().next(),
                text.chars().next().map_or(1, char::len_utf8),
            ),
            Err(error) if error.valid_up_to() > 0 => {
                let text = std::str::from_utf8(&rest[..error.valid_up_to()]).unwrap_or_default();
                let c = text.chars().next();
                (c, c.map_or(1, char::len_utf8))
            }
            Err(_) => (None, 1),
        };
        match c {
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some('\x07') => out.push_str("\\a"),
            Some('\x08') => out.push_str("\\b"),
            Some('\x0c') => out.push_str("\\f"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some('\t') => out.push_str("\\t"),
            Some('\x0b') => out.push_str("\\v"),
            Some(c) if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            Some(c) if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            Some(c) => out.push(c),
            None => {
                let _ = write!(out, "\\x{:02x}", rest[0]);
            }
        }
        rest = &rest[len..];
    }
    out.push('"');
    out
}

/// Writes raw bytes and a newline to stdout (keys and values need not be UTF-8).
fn line(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.push(b'\n');
}

fn hex_escaped(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("\\x{b:02x}").into_bytes())
        .collect()
}

impl Printer {
    fn kv_simple(&self, out: &mut Vec<u8>, kv: &KeyValue) {
        let (key, value) = if self.hex {
            (hex_escaped(&kv.key), hex_escaped(&kv.value))
        } else {
            (kv.key.to_vec(), kv.value.to_vec())
        };
        if !self.value_only {
            line(out, &key);
        }
        line(out, &value);
    }

    fn kv_fields(out: &mut Vec<u8>, prefix: &str, kv: &KeyValue) {
        let mut text = String::new();
        let _ = writeln!(text, "\"{prefix}Key\" : {}", go_quote(&kv.key));
        let _ = writeln!(text, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
        let _ = writeln!(text, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
        let _ = writeln!(text, "\"{prefix}Version\" : {}", kv.version);
        let _ = writeln!(text, "\"{prefix}Value\" : {}", go_quote(&kv.value));
        let _ = writeln!(text, "\"{prefix}Lease\" : {}", kv.lease);
        out.extend_from_slice(text.as_bytes());
    }

    fn header_fields(out: &mut Vec<u8>, header: Option<&pb::ResponseHeader>) {
        let header = header.cloned().unwrap_or_default();
        let text = format!(
            "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
            header.cluster_id, header.member_id, header.revision, header.raft_term
        );
        out.extend_from_slice(text.as_bytes());
    }

    fn emit(out: Vec<u8>) {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&out);
        let _ = stdout.flush();
    }

    /// Prints `-w json` of a whole response, or fails for `table`.
    fn json_or_table<M: serde::Serialize>(
        &self,
        message: &M,
        type_name: &str,
    ) -> Result<(), Failure> {
        match self.format {
            Format::Json => {
                println!("{}", json(message, type_name));
                Ok(())
            }
            format => Err(unsupported(format)),
        }
    }

    pub fn get(&self, response: &pb::RangeResponse) -> Result<(), Failure> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => {
                for kv in &response.kvs {
                    self.kv_simple(&mut out, kv);
                }
            }
            Format::Fields => {
                Self::header_fields(&mut out, response.header.as_ref());
                for kv in &response.kvs {
                    Self::kv_fields(&mut out, "", kv);
                }
                let _ = write!(
                    StringSink(&mut out),
                    "\"More\" : {}\n\"Count\" : {}\n",
                    response.more,
                    response.count
                );
            }
            _ => return self.json_or_table(response, "etcdserverpb.RangeResponse"),
        }
        Self::emit(out);
        Ok(())
    }

    pub fn put(&self, response: &pb::PutResponse) -> Result<(), Failure> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => {
                line(&mut out, b"OK");
                if let Some(kv) = &response.prev_kv {
                    self.kv_simple(&mut out, kv);
                }
            }
            Format::Fields => {
                Self::header_fields(&mut out, response.header.as_ref());
                if let Some(kv) = &response.prev_kv {
                    Self::kv_fields(&mut out, "Prev", kv);
                }
            }
            _ => return self.json_or_table(response, "etcdserverpb.PutResponse"),
        }
        Self::emit(out);
        Ok(())
    }

    pub fn del(&self, response: &pb::DeleteRangeResponse) -> Result<(), Failure> {
        let mut out = Vec::new();
        match self.format {
            Format::Simple => {
                line(&mut out, response.deleted.to_string().as_bytes());
                for kv in &response.prev_kvs {
                    self.kv_simple(&mut out, kv);
                }
            }
            Format::Fields => {
                Self::header_fields(&mut out, response.header.as_ref());
                line(
                    &mut out,
                    format!("\"Deleted\" : {}", response.deleted).as_bytes(),
                );
                for kv in &response.prev_kvs {
                    Self::kv_fields(&mut out, "Prev", kv);
                }
            }
            _ => return self.json_or_table(response, "etcdserverpb.DeleteRangeResponse"),
        }
        Self::emit(out);
        Ok(())
    }

    pub fn txn(&self, response: &pb::TxnResponse) -> Result<(), Failure> {
        use pb::response_op::Response;
        match self.format {
            Format::Simple => {
                println!(
                    "{}",
                    if response.succeeded {
                        "SUCCESS"
                    } else {
                        "FAILURE"
                    }
                );
                for op in &response.responses {
                    println!();
                    match &op.response {
                        Some(Response::ResponseRange(r)) => self.get(r)?,
                        Some(Response::ResponsePut(r)) => self.put(r)?,
                        Some(Response::ResponseDeleteRange(r)) => self.del(r)?,
                        other => println!("unexpected response {other:?}"),
                    }
                }
                Ok(())
            }
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                line(
                    &mut out,
                    format!("\"Succeeded\" : {}", response.succeeded).as_bytes(),
                );
                Self::emit(out);
                for op in &response.responses {
                    match &op.response {
                        Some(Response::ResponseRange(r)) => self.get(r)?,
                        Some(Response::ResponsePut(r)) => self.put(r)?,
                        Some(Response::ResponseDeleteRange(r)) => self.del(r)?,
                        other => println!(
                            "\"Unknown\" : {}",
                            go_quote(format!("{other:?}").as_bytes())
                        ),
                    }
                }
                Ok(())
            }
            _ => self.json_or_table(response, "etcdserverpb.TxnResponse"),
        }
    }

    /// One watch response with events (etcdctl prints nothing for the others).
    pub fn watch(&self, response: &pb::WatchResponse) -> Result<(), Failure> {
        let mut out = Vec::new();
        let kind = |event: &mvccpb::Event| match mvccpb::event::EventType::try_from(event.r#type) {
            Ok(mvccpb::event::EventType::Delete) => "DELETE",
            _ => "PUT",
        };
        match self.format {
            Format::Simple => {
                for event in &response.events {
                    line(&mut out, kind(event).as_bytes());
                    if let Some(prev) = &event.prev_kv {
                        self.kv_simple(&mut out, prev);
                    }
                    self.kv_simple(&mut out, event.kv.as_ref().unwrap_or(&KeyValue::default()));
                }
            }
            Format::Fields => {
                Self::header_fields(&mut out, response.header.as_ref());
                for event in &response.events {
                    line(&mut out, format!("\"Type\" : {}", kind(event)).as_bytes());
                    if let Some(prev) = &event.prev_kv {
                        Self::kv_fields(&mut out, "Prev", prev);
                    }
                    Self::kv_fields(
                        &mut out,
                        "",
                        event.kv.as_ref().unwrap_or(&KeyValue::default()),
                    );
                }
            }
            Format::Json => {
                // clientv3's WatchResponse: a header struct and Go field names.
                let header = json(
                    &response.header.unwrap_or_default(),
                    "etcdserverpb.ResponseHeader",
                );
                let events: Vec<String> = response
                    .events
                    .iter()
                    .map(|event| json(event, "mvccpb.Event"))
                    .collect();
                let events = format!("[{}]", events.join(","));
                let text = format!(
                    "{{\"Header\":{header},\"Events\":{events},\"CompactRevision\":{},\"Canceled\":{},\"Created\":{}}}\n",
                    response.compact_revision, response.canceled, response.created
                );
                out.extend_from_slice(text.as_bytes());
            }
            format => return Err(unsupported(format)),
        }
        Self::emit(out);
        Ok(())
    }

    /// clientv3's lease responses embed the header's fields and name the rest in Go.
    fn lease_json(header: Option<&pb::ResponseHeader>, rest: &str) -> String {
        let header = schema().go_json_fields(
            &header.cloned().unwrap_or_default(),
            ".etcdserverpb.ResponseHeader",
        );
        if header.is_empty() {
            format!("{{{rest}}}")
        } else {
            format!("{{{header},{rest}}}")
        }
    }

    pub fn grant(&self, response: &pb::LeaseGrantResponse) -> Result<(), Failure> {
        match self.format {
            Format::Simple => println!(
                "lease {:016x} granted with TTL({}s)",
                response.id, response.ttl
            ),
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                Self::emit(out);
                println!("\"ID\" : {}\n\"TTL\" : {}", response.id, response.ttl);
            }
            Format::Json => println!(
                "{}",
                Self::lease_json(
                    response.header.as_ref(),
                    &format!(
                        "\"ID\":{},\"TTL\":{},\"Error\":{}",
                        response.id,
                        response.ttl,
                        oxcd::server::go_string(&response.error)
                    )
                )
            ),
            format => return Err(unsupported(format)),
        }
        Ok(())
    }

    pub fn revoke(&self, id: i64, response: &pb::LeaseRevokeResponse) -> Result<(), Failure> {
        match self.format {
            Format::Simple => println!("lease {id:016x} revoked"),
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                Self::emit(out);
            }
            _ => return self.json_or_table(response, "etcdserverpb.LeaseRevokeResponse"),
        }
        Ok(())
    }

    pub fn keep_alive(&self, response: &pb::LeaseKeepAliveResponse) -> Result<(), Failure> {
        match self.format {
            Format::Simple => println!(
                "lease {:016x} keepalived with TTL({})",
                response.id, response.ttl
            ),
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                Self::emit(out);
                println!("\"ID\" : {}\n\"TTL\" : {}", response.id, response.ttl);
            }
            Format::Json => println!(
                "{}",
                Self::lease_json(
                    response.header.as_ref(),
                    &format!("\"ID\":{},\"TTL\":{}", response.id, response.ttl)
                )
            ),
            format => return Err(unsupported(format)),
        }
        Ok(())
    }

    pub fn time_to_live(
        &self,
        response: &pb::LeaseTimeToLiveResponse,
        keys: bool,
    ) -> Result<(), Failure> {
        match self.format {
            Format::Simple => {
                if response.granted_ttl == 0 && response.ttl == -1 {
                    println!("lease {:016x} already expired", response.id);
                    return Ok(());
                }
                let mut text = format!(
                    "lease {:016x} granted with TTL({}s), remaining({}s)",
                    response.id, response.granted_ttl, response.ttl
                );
                if keys {
                    let names: Vec<String> = response
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    let _ = write!(text, ", attached keys([{}])", names.join(" "));
                }
                println!("{text}");
            }
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                let _ = write!(
                    StringSink(&mut out),
                    "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
                    response.id,
                    response.ttl,
                    response.granted_ttl
                );
                for key in &response.keys {
                    line(&mut out, format!("\"Key\" : {}", go_quote(key)).as_bytes());
                }
                Self::emit(out);
            }
            Format::Json => {
                use base64::Engine as _;
                let keys = if response.keys.is_empty() {
                    "null".to_string()
                } else {
                    let encoded: Vec<String> = response
                        .keys
                        .iter()
                        .map(|k| {
                            format!(
                                "\"{}\"",
                                base64::engine::general_purpose::STANDARD.encode(k)
                            )
                        })
                        .collect();
                    format!("[{}]", encoded.join(","))
                };
                println!(
                    "{}",
                    Self::lease_json(
                        response.header.as_ref(),
                        &format!(
                            "\"id\":{},\"ttl\":{},\"granted-ttl\":{},\"keys\":{keys}",
                            response.id, response.ttl, response.granted_ttl
                        )
                    )
                );
            }
            format => return Err(unsupported(format)),
        }
        Ok(())
    }

    pub fn leases(&self, response: &pb::LeaseLeasesResponse) -> Result<(), Failure> {
        match self.format {
            Format::Simple => {
                println!("found {} leases", response.leases.len());
                for lease in &response.leases {
                    println!("{:016x}", lease.id);
                }
            }
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                Self::emit(out);
                for lease in &response.leases {
                    println!("\"ID\" : {}", lease.id);
                }
            }
            Format::Json => {
                let leases: Vec<String> = response
                    .leases
                    .iter()
                    .map(|lease| format!("{{\"id\":{}}}", lease.id))
                    .collect();
                let leases = format!("[{}]", leases.join(","));
                println!(
                    "{}",
                    Self::lease_json(response.header.as_ref(), &format!("\"leases\":{leases}"))
                );
            }
            format => return Err(unsupported(format)),
        }
        Ok(())
    }

    pub fn member_list(&self, response: &pb::MemberListResponse) -> Result<(), Failure> {
        let rows: Vec<Vec<String>> = response
            .members
            .iter()
            .map(|m| {
                vec![
                    format!("{:x}", m.id),
                    if m.name.is_empty() {
                        "unstarted"
                    } else {
                        "started"
                    }
                    .to_string(),
                    m.name.clone(),
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner.to_string(),
                ]
            })
            .collect();
        match self.format {
            Format::Simple => {
                for row in rows {
                    println!("{}", row.join(", "));
                }
            }
            Format::Table => print!(
                "{}",
                table(
                    &[
                        "ID",
                        "STATUS",
                        "NAME",
                        "PEER ADDRS",
                        "CLIENT ADDRS",
                        "IS LEARNER"
                    ],
                    &rows
                )
            ),
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                Self::emit(out);
                for m in &response.members {
                    println!("\"ID\" : {}", m.id);
                    println!("\"Name\" : {}", go_quote(m.name.as_bytes()));
                    for url in &m.peer_ur_ls {
                        println!("\"PeerURL\" : {}", go_quote(url.as_bytes()));
                    }
                    for url in &m.client_ur_ls {
                        println!("\"ClientURL\" : {}", go_quote(url.as_bytes()));
                    }
                    println!("\"IsLearner\" : {}", m.is_learner);
                    println!();
                }
            }
            Format::Json => println!("{}", json(response, "etcdserverpb.MemberListResponse")),
        }
        Ok(())
    }

    /// `member add/remove/update/promote`: one line in simple, the response otherwise.
    pub fn member_change<M: serde::Serialize>(
        &self,
        simple: &str,
        header: Option<&pb::ResponseHeader>,
        response: &M,
        type_name: &str,
    ) -> Result<(), Failure> {
        match self.format {
            Format::Simple => println!("{simple}"),
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, header);
                Self::emit(out);
            }
            _ => return self.json_or_table(response, type_name),
        }
        Ok(())
    }

    pub fn alarms(&self, response: &pb::AlarmResponse) -> Result<(), Failure> {
        let name = |alarm: i32| {
            pb::AlarmType::try_from(alarm)
                .map(|a| a.as_str_name().to_string())
                .unwrap_or_else(|_| alarm.to_string())
        };
        match self.format {
            Format::Simple => {
                for alarm in &response.alarms {
                    println!("memberID:{} alarm:{} ", alarm.member_id, name(alarm.alarm));
                }
            }
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, response.header.as_ref());
                Self::emit(out);
                for alarm in &response.alarms {
                    println!("\"MemberID\" : {}", alarm.member_id);
                    println!("\"AlarmType\" : {}", name(alarm.alarm));
                }
            }
            _ => return self.json_or_table(response, "etcdserverpb.AlarmResponse"),
        }
        Ok(())
    }

    /// Auth verbs: one line (or several) in simple, the response in json, the header in
    /// fields.
    pub fn auth<M: serde::Serialize>(
        &self,
        simple: &str,
        header: Option<&pb::ResponseHeader>,
        response: &M,
        type_name: &str,
    ) -> Result<(), Failure> {
        match self.format {
            Format::Simple => print!("{simple}"),
            Format::Fields => {
                let mut out = Vec::new();
                Self::header_fields(&mut out, header);
                Self::emit(out);
            }
            _ => return self.json_or_table(response, type_name),
        }
        Ok(())
    }

    /// Simple output only (the verbs etcdctl prints no other way); other formats fail
    /// after the request, as etcdctl's do.
    pub fn simple_only(&self, text: &str) -> Result<(), Failure> {
        match self.format {
            Format::Simple => {
                print!("{text}");
                Ok(())
            }
            format => Err(unsupported(format)),
        }
    }
}

/// `write!` into a byte buffer.
struct StringSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for StringSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A byte count as etcd prints it (SI units, go-humanize's `Bytes`): `20 kB`, `1.5 MB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).ln() / 1000f64.ln()).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = (bytes as f64 / 1000f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

/// A table as etcdctl draws them (tablewriter): centered upper-case headers,
/// right-aligned cells.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, header)| {
            rows.iter()
                .map(|row| row.get(i).map_or(0, |cell| cell.chars().count()))
                .chain([header.len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|width| format!("+{}", "-".repeat(*width)))
        .collect::<String>()
        + "+\n";
    let centered: String = headers
        .iter()
        .zip(&widths)
        .map(|(header, width)| {
            let left = (width - header.len()) / 2;
            let right = width - header.len() - left;
            format!("|{}{header}{}", " ".repeat(left), " ".repeat(right))
        })
        .collect::<String>()
        + "|\n";
    let mut out = format!("{rule}{centered}{rule}");
    for row in rows {
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(
                out,
                "|{}{cell} ",
                " ".repeat(width - 1 - cell.chars().count())
            );
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_etcd_prints_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(176_128), "176 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(999), "999 B");
    }

    #[test]
    fn quoting_is_gos() {
        assert_eq!(go_quote(b"foo"), "\"foo\"");
        assert_eq!(go_quote(b"a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote(b"k\xff\x01"), "\"k\\xff\\x01\"");
        assert_eq!(go_quote("k¿".as_bytes()), "\"k¿\"");
    }

    #[test]
    fn tables_center_headers_and_right_align_cells() {
        let rows = vec![vec!["8e9e05c52164694d".to_string(), "true".to_string()]];
        assert_eq!(
            table(&["ID", "IS LEADER"], &rows),
            "+------------------+-----------+\n\
             |        ID        | IS LEADER |\n\
             +------------------+-----------+\n\
             | 8e9e05c52164694d |      true |\n\
             +------------------+-----------+\n"
        );
    }
}
