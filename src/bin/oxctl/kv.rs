//! The key-value verbs: `get`, `put`, `del`, `txn`, `compaction`, `watch`, and
//! `make-mirror`. Keys and values are taken from the command line as bytes (they need not
//! be UTF-8), and range ends are computed on bytes as clientv3 does.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt as _;

use clap::Args;
use oxcd::proto::etcdserverpb as pb;
use oxcd::proto::etcdserverpb::{compare, request_op};

use crate::client::Client;
use crate::print::Format;
use crate::{block_on, Failure, Global};

/// The end of the range of keys that start with `prefix` (clientv3's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and the rest dropped; `\0` (every
/// key from the prefix on) when every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn bytes(arg: &OsString) -> Vec<u8> {
    arg.as_bytes().to_vec()
}

#[derive(Args, Clone, Default)]
pub struct GetArgs {
    /// The key, and an optional end of the range [key, range_end).
    #[arg(required = true, num_args = 1..=2, allow_hyphen_values = false)]
    keys: Vec<OsString>,
    /// Linearizable (l) or Serializable (s).
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Order of results: ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    order: String,
    /// Sort target: CREATE, KEY, MODIFY, VALUE, or VERSION.
    #[arg(long, default_value = "")]
    sort_by: String,
    /// Maximum number of results.
    #[arg(long, default_value_t = 0)]
    limit: i64,
    /// Get keys with matching prefix.
    #[arg(long)]
    prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare.
    #[arg(long)]
    from_key: bool,
    /// Specify the kv revision.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Get only the keys.
    #[arg(long)]
    keys_only: bool,
    /// Get only the count.
    #[arg(long)]
    count_only: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long)]
    print_value_only: bool,
}

/// The key and range end of `key [end]` with `--prefix` / `--from-key`.
fn key_range(
    keys: &[OsString],
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    if prefix && from_key {
        return Err(Failure::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut key = bytes(&keys[0]);
    let mut end = Vec::new();
    if keys.len() > 1 {
        if prefix || from_key {
            return Err(Failure::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        end = bytes(&keys[1]);
    }
    if prefix {
        if key.is_empty() {
            key = vec![0];
            end = vec![0];
        } else {
            end = prefix_end(&key);
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        end = vec![0];
    }
    Ok((key, end))
}

fn range_request(args: &GetArgs) -> Result<pb::RangeRequest, Failure> {
    let (key, range_end) = key_range(&args.keys, args.prefix, args.from_key)?;
    let serializable = match args.consistency.as_str() {
        "s" => true,
        "l" => false,
        other => {
            return Err(Failure::bad_feature(format!(
                "unknown consistency flag {other:?}"
            )))
        }
    };
    let mut sort_order = match args.order.to_uppercase().as_str() {
        "ASCEND" => pb::range_request::SortOrder::Ascend,
        "DESCEND" => pb::range_request::SortOrder::Descend,
        "" => pb::range_request::SortOrder::None,
        _ => {
            return Err(Failure::bad_feature(format!(
                "bad sort order {}",
                args.order
            )))
        }
    };
    let sort_target = match args.sort_by.to_uppercase().as_str() {
        "CREATE" => pb::range_request::SortTarget::Create,
        "KEY" | "" => pb::range_request::SortTarget::Key,
        "MODIFY" => pb::range_request::SortTarget::Mod,
        "VALUE" => pb::range_request::SortTarget::Value,
        "VERSION" => pb::range_request::SortTarget::Version,
        _ => {
            return Err(Failure::bad_feature(format!(
                "bad sort target {}",
                args.sort_by
            )))
        }
    };
    // clientv3's WithSort: ascending by key is the store's own order.
    if sort_target == pb::range_request::SortTarget::Key
        && sort_order == pb::range_request::SortOrder::Ascend
    {
        sort_order = pb::range_request::SortOrder::None;
    }
    Ok(pb::RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        limit: args.limit,
        revision: args.rev.max(0),
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable,
        keys_only: args.keys_only,
        count_only: args.count_only,
        ..Default::default()
    })
}

pub fn get(global: &Global, args: &GetArgs) -> Result<(), Failure> {
    let request = range_request(args)?;
    let mut printer = global.printer();
    if args.print_value_only {
        if printer.format != Format::Simple {
            return Err(Failure::bad_args(
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        printer.value_only = true;
    }
    let response = block_on(async {
        let client = Client::connect(global).await?;
        client
            .kv()
            .range(client.request(request))
            .await
            .map_err(Failure::status)
    })?;
    printer.get(response.get_ref())
}

#[derive(Args, Clone, Default)]
pub struct PutArgs {
    /// The key and its value (read from stdin when not given).
    #[arg(required = true, num_args = 1..=2)]
    args: Vec<OsString>,
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long, default_value = "0")]
    lease: String,
    /// Return the previous key-value pair before modification.
    #[arg(long)]
    prev_kv: bool,
    /// Updates the key using its current value.
    #[arg(long)]
    ignore_value: bool,
    /// Updates the key using its current lease.
    #[arg(long)]
    ignore_lease: bool,
}

fn lease_id(text: &str) -> Result<i64, String> {
    u64::from_str_radix(text, 16)
        .ok()
        .and_then(|id| i64::try_from(id).ok())
        .ok_or_else(|| format!("strconv.ParseInt: parsing {text:?}: invalid syntax"))
}

fn put_request(args: &PutArgs) -> Result<pb::PutRequest, Failure> {
    let key = bytes(&args.args[0]);
    if args.ignore_value && args.args.len() > 1 {
        return Err(Failure::bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let value = if args.ignore_value {
        Vec::new()
    } else if let Some(value) = args.args.get(1) {
        bytes(value)
    } else {
        use std::io::Read as _;
        let mut value = Vec::new();
        std::io::stdin().read_to_end(&mut value).map_err(|_| {
            Failure::bad_args("put command needs 1 argument and input from stdin or 2 arguments")
        })?;
        value
    };
    let lease = lease_id(&args.lease).map_err(|error| {
        Failure::bad_args(format!("bad lease ID ({error}), expecting ID in Hex"))
    })?;
    Ok(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    })
}

pub fn put(global: &Global, args: &PutArgs) -> Result<(), Failure> {
    let request = put_request(args)?;
    let response = block_on(async {
        let client = Client::connect(global).await?;
        client
            .kv()
            .put(client.request(request))
            .await
            .map_err(Failure::status)
    })?;
    global.printer().put(response.get_ref())
}

#[derive(Args, Clone, Default)]
pub struct DelArgs {
    /// The key, and an optional end of the range [key, range_end).
    #[arg(required = true, num_args = 1..=2)]
    keys: Vec<OsString>,
    /// Delete keys with matching prefix.
    #[arg(long)]
    prefix: bool,
    /// Return deleted key-value pairs.
    #[arg(long)]
    prev_kv: bool,
    /// Delete keys that are greater than or equal to the given key using byte compare.
    #[arg(long)]
    from_key: bool,
}

fn delete_request(args: &DelArgs) -> Result<pb::DeleteRangeRequest, Failure> {
    let (key, range_end) = key_range(&args.keys, args.prefix, args.from_key)?;
    Ok(pb::DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: args.prev_kv,
    })
}

pub fn del(global: &Global, args: &DelArgs) -> Result<(), Failure> {
    let request = delete_request(args)?;
    let response = block_on(async {
        let client = Client::connect(global).await?;
        client
            .kv()
            .delete_range(client.request(request))
            .await
            .map_err(Failure::status)
    })?;
    global.printer().del(response.get_ref())
}

#[derive(Args, Clone)]
pub struct TxnArgs {
    /// Prompt for each part of the transaction.
    #[arg(short = 'i', long)]
    interactive: bool,
}

/// Splits a line of a txn into words as etcdctl does: spaces separate, double quotes
/// group (with Go's escapes inside).
fn argify(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some(other) => word.push(other),
                        None => {}
                    },
                    '"' => break,
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    words
}

/// A Go `%q` string at the start of `text`: its value and the rest.
fn quoted(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    let mut chars = text.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    let mut value = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                '0' => value.push('\0'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// One compare line: `mod("key") > "5"`, `value("k") = "v"`, `create("k") = "0"`,
/// `version("k") != "2"`, `lease("k") = "694d5765fc71500b"`.
fn parse_compare(line: &str) -> Result<pb::Compare, String> {
    let malformed = || format!("malformed comparison: {line}");
    let (target, rest) = line.split_once('(').ok_or_else(malformed)?;
    let (key, rest) = quoted(rest).ok_or_else(malformed)?;
    let rest = rest.strip_prefix(')').ok_or_else(malformed)?.trim_start();
    let (op, rest) = rest.split_once(' ').ok_or_else(malformed)?;
    let (value, _) = quoted(rest).ok_or_else(malformed)?;
    let result = match op {
        "=" | "==" => compare::CompareResult::Equal,
        "!=" => compare::CompareResult::NotEqual,
        ">" => compare::CompareResult::Greater,
        "<" => compare::CompareResult::Less,
        _ => return Err(format!("malformed comparison: {line} (unknown op {op})")),
    };
    let number = || {
        value
            .parse::<i64>()
            .map_err(|_| format!("invalid txn compare request: {line}"))
    };
    let (target, union) = match target {
        "ver" | "version" => (
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(number()?),
        ),
        "c" | "create" => (
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(number()?),
        ),
        "m" | "mod" => (
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(number()?),
        ),
        "val" | "value" => (
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(value.clone().into_bytes().into()),
        ),
        "lease" => (
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(
                lease_id(&value).map_err(|_| format!("invalid txn compare request: {line}"))?,
            ),
        ),
        _ => {
            return Err(format!(
                "malformed comparison: {line} (unknown target {target})"
            ))
        }
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes().into(),
        range_end: Default::default(),
        target_union: Some(union),
    })
}

#[derive(clap::Parser)]
#[command(no_binary_name = true)]
enum TxnOp {
    Get(GetArgs),
    Put(PutArgs),
    Del(DelArgs),
}

/// One request line: `put k v [--lease ...]`, `get k [--prefix ...]`, `del k [...]`.
fn parse_op(line: &str) -> Result<pb::RequestOp, Failure> {
    use clap::Parser as _;
    let words = argify(line);
    if words.len() < 2 {
        return Err(Failure::invalid_input(format!(
            "invalid txn compare request: {line}"
        )));
    }
    let invalid = || Failure::invalid_input(format!("invalid txn request: {line}"));
    let op = TxnOp::try_parse_from(&words).map_err(|_| invalid())?;
    let request = match op {
        TxnOp::Get(args) => {
            request_op::Request::RequestRange(range_request(&args).map_err(|_| invalid())?)
        }
        TxnOp::Put(args) => {
            if args.args.len() < 2 && !args.ignore_value {
                // etcdctl reads the value from its stdin, which the txn has already taken.
                return Err(Failure::bad_args(
                    "put command needs 1 argument and input from stdin or 2 arguments",
                ));
            }
            request_op::Request::RequestPut(put_request(&args).map_err(|_| invalid())?)
        }
        TxnOp::Del(args) => {
            request_op::Request::RequestDeleteRange(delete_request(&args).map_err(|_| invalid())?)
        }
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

/// Reads the lines of one part of a txn, up to an empty line or the end of input.
fn read_part(input: &mut dyn std::io::BufRead) -> Result<Vec<String>, Failure> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let read = input
            .read_line(&mut line)
            .map_err(|error| Failure::invalid_input(error.to_string()))?;
        let line = line.trim();
        if read == 0 || line.is_empty() {
            return Ok(lines);
        }
        lines.push(line.to_string());
    }
}

/// The txn etcdctl's stdin format describes: compares, an empty line, the success
/// requests, an empty line, the failure requests.
fn read_txn(
    input: &mut dyn std::io::BufRead,
    interactive: bool,
) -> Result<pb::TxnRequest, Failure> {
    let prompt = |text: &str| {
        if interactive {
            println!("{text}");
        }
    };
    prompt("compares:");
    let compare = read_part(input)?
        .iter()
        .map(|line| parse_compare(line))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::invalid_input)?;
    prompt("success requests (get, put, del):");
    let success = read_part(input)?
        .iter()
        .map(|line| parse_op(line))
        .collect::<Result<Vec<_>, _>>()?;
    prompt("failure requests (get, put, del):");
    let failure = read_part(input)?
        .iter()
        .map(|line| parse_op(line))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pb::TxnRequest {
        compare,
        success,
        failure,
    })
}

pub fn txn(global: &Global, args: &TxnArgs) -> Result<(), Failure> {
    let request = read_txn(&mut std::io::stdin().lock(), args.interactive)?;
    let response = block_on(async {
        let client = Client::connect(global).await?;
        client
            .kv()
            .txn(client.request(request))
            .await
            .map_err(Failure::status)
    })?;
    global.printer().txn(response.get_ref())
}

#[derive(Args, Clone)]
pub struct CompactionArgs {
    /// The revision to compact at.
    revision: String,
    /// Wait for the compaction to physically remove all old revisions.
    #[arg(long)]
    physical: bool,
}

pub fn compaction(global: &Global, args: &CompactionArgs) -> Result<(), Failure> {
    let revision: i64 = args.revision.parse().map_err(|_| {
        Failure::error(format!(
            "strconv.ParseInt: parsing {:?}: invalid syntax",
            args.revision
        ))
    })?;
    block_on(async {
        let client = Client::connect(global).await?;
        client
            .kv()
            .compact(client.request(pb::CompactionRequest {
                revision,
                physical: args.physical,
            }))
            .await
            .map_err(Failure::status)
    })?;
    println!("compacted revision {revision}");
    Ok(())
}

#[derive(Args, Clone)]
pub struct WatchArgs {
    /// The key, and an optional end of the range [key, range_end).
    #[arg(num_args = 0..=2)]
    keys: Vec<OsString>,
    /// Watch on a prefix.
    #[arg(long)]
    prefix: bool,
    /// Revision to start watching.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Get the previous key-value pair before the event happens.
    #[arg(long)]
    prev_kv: bool,
    /// Ask the server for progress notifications.
    #[arg(long)]
    progress_notify: bool,
    /// A command run after each event (after `--`), with the event in
    /// `ETCD_WATCH_REVISION`, `ETCD_WATCH_KEY`, `ETCD_WATCH_EVENT_TYPE`, `ETCD_WATCH_VALUE`.
    #[arg(last = true)]
    exec: Vec<String>,
}

/// Runs a watch's `-- command` for one event, as etcdctl does.
fn run_for_event(command: &[String], event: &oxcd::proto::mvccpb::Event) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let kv = event.kv.clone().unwrap_or_default();
    let kind = if event.r#type == oxcd::proto::mvccpb::event::EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    let status = std::process::Command::new(program)
        .args(args)
        .env("ETCD_WATCH_REVISION", kv.mod_revision.to_string())
        .env("ETCD_WATCH_KEY", String::from_utf8_lossy(&kv.key).as_ref())
        .env("ETCD_WATCH_EVENT_TYPE", kind)
        .env(
            "ETCD_WATCH_VALUE",
            String::from_utf8_lossy(&kv.value).as_ref(),
        )
        .status();
    if let Err(error) = status {
        eprintln!("command {command:?} failed: {error}");
    }
}

pub fn watch(global: &Global, args: &WatchArgs) -> Result<(), Failure> {
    if args.keys.is_empty() {
        return Err(Failure::bad_args("watch in non-interactive mode requires one or two arguments as key and optional range_end"));
    }
    if args.prefix && args.keys.len() > 1 {
        return Err(Failure::bad_args(
            "`range_end` and `--prefix` are mutually exclusive",
        ));
    }
    let (key, range_end) = key_range(&args.keys, args.prefix, false)?;
    let printer = global.printer();
    let create = pb::WatchCreateRequest {
        key: key.into(),
        range_end: range_end.into(),
        start_revision: args.rev,
        progress_notify: args.progress_notify,
        prev_kv: args.prev_kv,
        ..Default::default()
    };
    block_on(async {
        let client = Client::connect(global).await?;
        let (sender, mut stream) = client.open_watch(create).await?;
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(status) => return Err(Failure::status(status)),
            };
            if response.canceled {
                // As clientv3 hands it over: the cancelling response, then why.
                if printer.format == Format::Json {
                    printer.watch(&response)?;
                }
                let reason = if response.compact_revision > 0 {
                    "etcdserver: mvcc: required revision has been compacted".to_string()
                } else {
                    response.cancel_reason.clone()
                };
                eprintln!("watch was canceled ({reason})");
                break;
            }
            if response.created && response.events.is_empty() {
                continue;
            }
            if !response.events.is_empty() || printer.format == Format::Json {
                printer.watch(&response)?;
            }
            for event in &response.events {
                run_for_event(&args.exec, event);
            }
        }
        drop(sender);
        Err(Failure::interrupted("watch is canceled by the server"))
    })
}

#[derive(Args, Clone)]
pub struct MirrorArgs {
    /// The destination cluster's endpoint (`host:port` or URL).
    destination: String,
    /// Key-value pairs with this prefix are mirrored.
    #[arg(long, default_value = "")]
    prefix: String,
    /// The prefix that replaces --prefix at the destination.
    #[arg(long)]
    dest_prefix: Option<String>,
    /// Mirrored keys lose the prefix (--dest-prefix "").
    #[arg(long)]
    no_dest_prefix: bool,
    /// Destination CA bundle.
    #[arg(long)]
    dest_cacert: Option<std::path::PathBuf>,
    /// Destination client certificate.
    #[arg(long)]
    dest_cert: Option<std::path::PathBuf>,
    /// Destination client key.
    #[arg(long)]
    dest_key: Option<std::path::PathBuf>,
    /// Skip verifying the destination's certificate.
    #[arg(long)]
    dest_insecure_transport: bool,
    /// name[:password] at the destination.
    #[arg(long)]
    dest_user: Option<String>,
    /// The password at the destination.
    #[arg(long)]
    dest_password: Option<String>,
    /// Resume from this revision of the source (the last one the destination has, as a
    /// previous run printed it) instead of copying everything first.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Stop once the existing keys are copied (no live mirroring).
    #[arg(long)]
    once: bool,
}

/// The destination key of a source key.
fn mirrored_key(key: &[u8], prefix: &[u8], dest_prefix: Option<&[u8]>) -> Vec<u8> {
    match dest_prefix {
        Some(dest) => {
            let mut out = dest.to_vec();
            out.extend_from_slice(&key[prefix.len().min(key.len())..]);
            out
        }
        None => key.to_vec(),
    }
}

pub fn make_mirror(global: &Global, args: &MirrorArgs) -> Result<(), Failure> {
    let destination = Global {
        endpoints: args.destination.clone(),
        cacert: args.dest_cacert.clone(),
        cert: args.dest_cert.clone(),
        key: args.dest_key.clone(),
        insecure_skip_tls_verify: args.dest_insecure_transport,
        user: args.dest_user.clone(),
        password: args.dest_password.clone(),
        ..global.clone()
    };
    let prefix = args.prefix.as_bytes().to_vec();
    let dest_prefix: Option<Vec<u8>> = if args.no_dest_prefix {
        Some(Vec::new())
    } else {
        args.dest_prefix.as_ref().map(|p| p.as_bytes().to_vec())
    };
    let (key, range_end) = if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.clone(), prefix_end(&prefix))
    };
    block_on(async {
        let source = Client::connect(global).await?;
        let dest = Client::connect(&destination).await?;
        let bar = crate::snapshot::progress_bar(
            "{spinner} {human_pos} keys mirrored, {per_sec}, {elapsed}",
        );
        let mut copied = 0u64;
        let mut start_revision = args.rev;
        if start_revision == 0 {
            // The existing keys, in pages, all at one revision.
            let mut revision = 0;
            let mut from = key.clone();
            loop {
                let page = source
                    .kv()
                    .range(source.request(pb::RangeRequest {
                        key: from.clone().into(),
                        range_end: range_end.clone().into(),
                        limit: 1000,
                        revision,
                        ..Default::default()
                    }))
                    .await
                    .map_err(Failure::status)?
                    .into_inner();
                revision = page.header.as_ref().map_or(0, |h| h.revision);
                for kv in &page.kvs {
                    dest.kv()
                        .put(dest.request(pb::PutRequest {
                            key: mirrored_key(&kv.key, &prefix, dest_prefix.as_deref()).into(),
                            value: kv.value.clone(),
                            ..Default::default()
                        }))
                        .await
                        .map_err(Failure::status)?;
                    copied += 1;
                    bar.set_position(copied);
                }
                match page.kvs.last() {
                    Some(last) if page.more => {
                        from = last.key.to_vec();
                        from.push(0);
                    }
                    _ => break,
                }
            }
            start_revision = revision + 1;
        } else {
            start_revision += 1;
        }
        bar.finish_and_clear();
        println!("{copied}");
        if args.once {
            eprintln!(
                "copied through source revision {} (go on from there with --rev {})",
                start_revision - 1,
                start_revision - 1
            );
            return Ok(());
        }
        // Then every change from the revision of the copy on, each revision's events as
        // one txn at the destination.
        let (_sender, mut stream) = source
            .open_watch(pb::WatchCreateRequest {
                key: key.clone().into(),
                range_end: range_end.clone().into(),
                start_revision,
                ..Default::default()
            })
            .await?;
        while let Some(response) = stream.message().await.map_err(Failure::status)? {
            if response.canceled {
                return Err(Failure::error(format!(
                    "the source cancelled the watch (compacted at {}): resume with --rev after a full copy",
                    response.compact_revision
                )));
            }
            let mut events = response.events.iter().peekable();
            while let Some(first) = events.next() {
                let revision = first.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                let mut ops = vec![first];
                while let Some(next) = events.peek() {
                    if next.kv.as_ref().map_or(0, |kv| kv.mod_revision) != revision {
                        break;
                    }
                    ops.extend(events.next());
                }
                let success = ops
                    .iter()
                    .filter_map(|event| {
                        let kv = event.kv.as_ref()?;
                        let key = mirrored_key(&kv.key, &prefix, dest_prefix.as_deref()).into();
                        let request = if event.r#type
                            == oxcd::proto::mvccpb::event::EventType::Delete as i32
                        {
                            request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                                key,
                                ..Default::default()
                            })
                        } else {
                            request_op::Request::RequestPut(pb::PutRequest {
                                key,
                                value: kv.value.clone(),
                                ..Default::default()
                            })
                        };
                        Some(pb::RequestOp {
                            request: Some(request),
                        })
                    })
                    .collect();
                dest.kv()
                    .txn(dest.request(pb::TxnRequest {
                        success,
                        ..Default::default()
                    }))
                    .await
                    .map_err(Failure::status)?;
                copied += ops.len() as u64;
                println!("{copied} (source revision {revision})");
            }
        }
        Err(Failure::error("the source closed the watch"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_computed_on_bytes() {
        assert_eq!(prefix_end(b"foo"), b"fop");
        assert_eq!(prefix_end("k¿".as_bytes()), b"k\xc2\xc0");
        assert_eq!(prefix_end(b"k\xff"), b"l");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn compares_parse_as_etcdctl_reads_them() {
        let compare = parse_compare(r#"mod("key1") > "0""#).unwrap();
        assert_eq!(compare.key.as_ref(), b"key1");
        assert_eq!(compare.result, compare::CompareResult::Greater as i32);
        assert_eq!(
            compare.target_union,
            Some(compare::TargetUnion::ModRevision(0))
        );
        let compare = parse_compare(r#"value("k") = "a b""#).unwrap();
        assert_eq!(
            compare.target_union,
            Some(compare::TargetUnion::Value("a b".into()))
        );
        assert!(parse_compare("mod(key) > 0").is_err());
        assert!(parse_compare(r#"size("k") = "1""#).is_err());
        assert!(parse_compare(r#"mod("k") > "x""#).is_err());
    }

    #[test]
    fn request_lines_parse_with_their_flags() {
        let op = parse_op(r#"put k "v w""#).unwrap();
        let Some(request_op::Request::RequestPut(put)) = op.request else {
            panic!("a put")
        };
        assert_eq!(put.value.as_ref(), b"v w");
        let op = parse_op("get k --prefix").unwrap();
        let Some(request_op::Request::RequestRange(range)) = op.request else {
            panic!("a range")
        };
        assert_eq!(range.range_end.as_ref(), b"l");
        assert!(parse_op("put k").is_err());
        assert!(parse_op("frob k v").is_err());
    }

    #[test]
    fn a_txn_reads_three_parts() {
        let input = "mod(\"k\") = \"0\"\n\nput k v\n\nget k\n";
        let txn = read_txn(&mut input.as_bytes(), false).unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (1, 1, 1)
        );
        // The end of input ends the parts too.
        let txn = read_txn(&mut "\nput k v".as_bytes(), false).unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (0, 1, 0)
        );
    }
}
