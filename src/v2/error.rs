//! etcd's v2 errors: a code, etcd's message for it, a cause and the store index, answered
//! as `{"errorCode":…,"message":…,"cause":…,"index":…}` with the HTTP status etcd uses.

/// The key does not exist.
pub const KEY_NOT_FOUND: u32 = 100;
/// A prevValue or prevIndex did not match.
pub const TEST_FAILED: u32 = 101;
/// A directory where a value was needed.
pub const NOT_FILE: u32 = 102;
/// A value where a directory was needed.
pub const NOT_DIR: u32 = 104;
/// The key exists already (prevExist=false, or a create).
pub const NODE_EXIST: u32 = 105;
/// The root cannot change.
pub const ROOT_READ_ONLY: u32 = 107;
/// A directory with children deleted without `recursive`.
pub const DIR_NOT_EMPTY: u32 = 108;
pub const PREV_VALUE_REQUIRED: u32 = 201;
pub const TTL_NAN: u32 = 202;
pub const INDEX_NAN: u32 = 203;
pub const INVALID_FIELD: u32 = 209;
pub const INVALID_FORM: u32 = 210;
pub const REFRESH_VALUE: u32 = 211;
pub const REFRESH_TTL_REQUIRED: u32 = 212;
pub const RAFT_INTERNAL: u32 = 300;
pub const LEADER_ELECT: u32 = 301;
/// A watch asked for an index older than the event history holds.
pub const EVENT_INDEX_CLEARED: u32 = 401;

/// One v2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Error {
    pub code: u32,
    pub cause: String,
    /// The store's index when the error happened.
    pub index: u64,
}

impl V2Error {
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> V2Error {
        V2Error {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// etcd's message for the code.
    pub fn message(&self) -> &'static str {
        match self.code {
            KEY_NOT_FOUND => "Key not found",
            TEST_FAILED => "Compare failed",
            NOT_FILE => "Not a file",
            NOT_DIR => "Not a directory",
            NODE_EXIST => "Key already exists",
            ROOT_READ_ONLY => "Root is read only",
            DIR_NOT_EMPTY => "Directory not empty",
            110 => "The request requires user authentication",
            PREV_VALUE_REQUIRED => "PrevValue is Required in POST form",
            TTL_NAN => "The given TTL in POST form is not a number",
            INDEX_NAN => "The given index in POST form is not a number",
            INVALID_FIELD => "Invalid field",
            INVALID_FORM => "Invalid POST form",
            REFRESH_VALUE => "Value provided on refresh",
            REFRESH_TTL_REQUIRED => "A TTL must be provided on refresh",
            RAFT_INTERNAL => "Raft Internal Error",
            LEADER_ELECT => "During Leader Election",
            400 => "watcher is cleared due to etcd recovery",
            EVENT_INDEX_CLEARED => "The event in requested index is outdated and cleared",
            _ => "Client Internal Error",
        }
    }

    /// The HTTP status etcd answers the error with.
    pub fn http_status(&self) -> u16 {
        match self.code {
            KEY_NOT_FOUND => 404,
            NOT_FILE | DIR_NOT_EMPTY => 403,
            110 => 401,
            TEST_FAILED | NODE_EXIST => 412,
            RAFT_INTERNAL | LEADER_ELECT => 500,
            _ => 400,
        }
    }
}

impl std::fmt::Display for V2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}) [{}]",
            self.code,
            self.message(),
            self.cause,
            self.index
        )
    }
}

impl std::error::Error for V2Error {}
