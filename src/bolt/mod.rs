//! bbolt database files: the format of etcd's backend and of its snapshots.
//!
//! etcd (3.4, bbolt 1.3) keeps its backend in a bbolt file, and `etcdctl snapshot save`
//! and the Maintenance `Snapshot` stream hand out that file as it stands, followed by a
//! 32-byte SHA-256 of it (a saved file whose size is 32 more than a multiple of 512
//! carries one). This module reads such files ([`Reader`]) and writes them
//! ([`Writer`]); what etcd puts in the buckets is not its business.
//!
//! # The format
//!
//! A file is an array of pages of one size (the size is in the meta page; etcd uses the
//! operating system's, 4096 here). Every page starts with a 16-byte header: page id
//! (u64), flags (u16), element count (u16), overflow (u32: how many pages follow that
//! belong to this one, for a node larger than a page). Integers are little-endian.
//!
//! - Pages 0 and 1 are meta pages. Each holds the magic, the version, the page size,
//!   the root bucket, the freelist page, the high-water mark (the first page id not in
//!   use), the transaction id, and an FNV-64a checksum of the bytes before it. The valid
//!   meta with the higher transaction id is the current one, so a torn write of one meta
//!   falls back to the other.
//! - A freelist page lists free page ids (u64 each); a count of 0xFFFF means the real
//!   count is the first u64. etcd does not write one (its meta says `NO_FREELIST`).
//! - A bucket is a B+tree. Branch pages hold elements {pos u32, ksize u32, pgid u64}
//!   whose keys are the first keys of their children; leaf pages hold elements {flags
//!   u32, pos u32, ksize u32, vsize u32}. `pos` counts from the element's own start to
//!   its key; the value follows the key.
//! - The root bucket (in the meta) holds one entry per top-level bucket, flagged
//!   [`BUCKET_LEAF_FLAG`], whose value is {root pgid u64, sequence u64}. A small bucket
//!   may be inline: root 0, and its single leaf page follows the 16 bytes in the value.
//!
//! # Layout
//!
//! This file holds the constants, the page header, the meta page and element parsing
//! that reading and writing share; `read.rs` holds the reader, `write.rs` the writer.
//!
//! # Trust
//!
//! Bytes from a file are never trusted: every offset, count and page id is checked
//! before use, and a malformed file is an [`Error`], never a panic or an allocation
//! beyond what the file's own size justifies.

mod read;
mod write;

#[cfg(test)]
mod tests;

pub use read::{Bucket, Entries, Entry, Reader};
pub use write::{append_trailer, Writer};

/// The magic number of a meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The file format version bbolt 1.3 writes and reads.
pub const VERSION: u32 = 2;
/// The page size etcd uses on this platform (the operating system's page size).
pub const PAGE_SIZE_DEFAULT: u32 = 4096;
/// The smallest page size accepted: a meta page must fit, and then some.
pub const PAGE_SIZE_MIN: u32 = 512;
/// The largest page size accepted (the largest operating system page in use).
pub const PAGE_SIZE_MAX: u32 = 1 << 16;

pub const PAGE_HEADER_SIZE: usize = 16;
pub const BRANCH_ELEMENT_SIZE: usize = 16;
pub const LEAF_ELEMENT_SIZE: usize = 16;
/// A bucket's value before its inline page: {root pgid u64, sequence u64}.
pub const BUCKET_HEADER_SIZE: usize = 16;
/// The meta fields covered by the checksum: magic through txid.
const META_CHECKSUMMED_SIZE: usize = 56;
/// The meta fields with the checksum.
const META_SIZE: usize = META_CHECKSUMMED_SIZE + 8;

pub const BRANCH_PAGE_FLAG: u16 = 0x01;
pub const LEAF_PAGE_FLAG: u16 = 0x02;
pub const META_PAGE_FLAG: u16 = 0x04;
pub const FREELIST_PAGE_FLAG: u16 = 0x10;
/// The leaf element flag of an entry that is a nested bucket.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;

/// The meta's freelist page id when no freelist is stored (bbolt's `NoFreelistSync`,
/// which etcd sets).
pub const NO_FREELIST: u64 = u64::MAX;
/// A page count of this value means the real count is the page's first u64.
const FREELIST_COUNT_OVERFLOW: u16 = 0xFFFF;

/// Keys longer than this are refused by bbolt (`MaxKeySize`).
pub const KEY_BYTES_MAX: usize = 32768;
/// Values longer than this are refused by bbolt (`MaxValueSize`).
pub const VALUE_BYTES_MAX: usize = (1 << 31) - 2;
/// A node holds fewer elements than this: bbolt refuses to write 0xFFFF.
const NODE_ELEMENTS_MAX: usize = 0xFFFF - 1;

/// The size of etcd's snapshot trailer, a SHA-256 of the bytes before it.
pub const TRAILER_SIZE: u64 = 32;
/// A file carries a trailer when its size is this much more than a multiple of
/// [`TRAILER_ALIGNMENT`] (etcd's own test in `snapshot restore`).
pub const TRAILER_ALIGNMENT: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bbolt file I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a bbolt file: no valid meta page (page 0: {meta0}; page 1: {meta1})")]
    NoValidMeta { meta0: String, meta1: String },
    #[error("bbolt file truncated: its meta needs {needed} bytes, the file has {len}")]
    Truncated { needed: u64, len: u64 },
    #[error("corrupt bbolt page {page}: {reason}")]
    Corrupt { page: u64, reason: String },
    #[error("corrupt bbolt bucket entry {name:?}: {reason}")]
    CorruptBucket { name: Vec<u8>, reason: String },
    #[error("bbolt node at page {page} is {bytes} bytes, above the reader's limit of {limit}")]
    NodeTooLarge { page: u64, bytes: u64, limit: u64 },
    #[error("the file has no SHA-256 trailer")]
    NoTrailer,
    #[error("the SHA-256 trailer does not match the file")]
    TrailerMismatch,
    #[error("page size {0} is not a power of two between 512 and 65536")]
    PageSize(u32),
    #[error("empty key or bucket name")]
    EmptyKey,
    #[error("key of {0} bytes, above bbolt's limit of 32768")]
    KeyTooLarge(usize),
    #[error("value of {0} bytes, above bbolt's limit")]
    ValueTooLarge(usize),
    #[error("bucket {name:?} does not come after {previous:?}")]
    BucketOrder { previous: Vec<u8>, name: Vec<u8> },
    #[error("key {key:?} does not come after {previous:?}")]
    KeyOrder { previous: Vec<u8>, key: Vec<u8> },
    #[error("a key was put before any bucket was begun")]
    NoBucket,
}

fn corrupt(page: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        page,
        reason: reason.into(),
    }
}

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Whether `page_size` is one this module reads and writes.
pub(crate) fn check_page_size(page_size: u32) -> Result<(), Error> {
    if page_size.is_power_of_two() && (PAGE_SIZE_MIN..=PAGE_SIZE_MAX).contains(&page_size) {
        Ok(())
    } else {
        Err(Error::PageSize(page_size))
    }
}

/// The 16 bytes at the start of every page (and of an inline bucket's page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    /// How many pages after this one belong to it.
    pub overflow: u32,
}

impl PageHeader {
    /// Parses the header at the start of `bytes`, which the caller has made at least
    /// [`PAGE_HEADER_SIZE`] long.
    pub(crate) fn parse(bytes: &[u8]) -> PageHeader {
        PageHeader {
            id: u64_at(bytes, 0),
            flags: u16_at(bytes, 8),
            count: u16_at(bytes, 10),
            overflow: u32_at(bytes, 12),
        }
    }

    pub(crate) fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

/// A meta page's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// The root bucket's root page.
    pub root: u64,
    /// The root bucket's sequence.
    pub sequence: u64,
    /// The freelist page, or [`NO_FREELIST`].
    pub freelist: u64,
    /// The high-water mark: the first page id not in use.
    pub high_water: u64,
    pub txid: u64,
}

/// The FNV-1a 64-bit hash bbolt checksums meta pages with.
fn fnv64a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

impl Meta {
    /// The bytes a meta page needs: the page header and the meta.
    pub(crate) const PAGE_BYTES: usize = PAGE_HEADER_SIZE + META_SIZE;

    /// Parses and validates the meta of a meta page (`page` holds at least
    /// [`Meta::PAGE_BYTES`]) as bbolt does: magic, version, and the checksum unless it is
    /// zero (bbolt skips a zero checksum too). Then the fields' consistency, which bbolt
    /// takes on trust: the page size, and the root and freelist below the high-water mark.
    pub(crate) fn parse(page: &[u8]) -> Result<Meta, String> {
        let meta = &page[PAGE_HEADER_SIZE..Meta::PAGE_BYTES];
        let magic = u32_at(meta, 0);
        if magic != MAGIC {
            return Err(format!("magic {magic:#010x}, not {MAGIC:#010x}"));
        }
        let version = u32_at(meta, 4);
        if version != VERSION {
            return Err(format!("version {version}, not {VERSION}"));
        }
        let checksum = u64_at(meta, META_CHECKSUMMED_SIZE);
        let computed = fnv64a(&meta[..META_CHECKSUMMED_SIZE]);
        if checksum != 0 && checksum != computed {
            return Err(format!(
                "checksum {checksum:#018x}, computed {computed:#018x}"
            ));
        }
        let parsed = Meta {
            page_size: u32_at(meta, 8),
            flags: u32_at(meta, 12),
            root: u64_at(meta, 16),
            sequence: u64_at(meta, 24),
            freelist: u64_at(meta, 32),
            high_water: u64_at(meta, 40),
            txid: u64_at(meta, 48),
        };
        check_page_size(parsed.page_size).map_err(|error| error.to_string())?;
        if parsed.root < 2 || parsed.root >= parsed.high_water {
            return Err(format!(
                "root page {} outside 2..{}",
                parsed.root, parsed.high_water
            ));
        }
        if parsed.freelist != NO_FREELIST
            && (parsed.freelist < 2 || parsed.freelist >= parsed.high_water)
        {
            return Err(format!(
                "freelist page {} outside 2..{}",
                parsed.freelist, parsed.high_water
            ));
        }
        Ok(parsed)
    }

    /// Writes this meta as meta page `id` (0 or 1) into `page`, checksum included.
    pub(crate) fn encode(&self, id: u64, page: &mut [u8]) {
        PageHeader {
            id,
            flags: META_PAGE_FLAG,
            count: 0,
            overflow: 0,
        }
        .encode(page);
        let meta = &mut page[PAGE_HEADER_SIZE..Meta::PAGE_BYTES];
        meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        meta[4..8].copy_from_slice(&VERSION.to_le_bytes());
        meta[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        meta[12..16].copy_from_slice(&self.flags.to_le_bytes());
        meta[16..24].copy_from_slice(&self.root.to_le_bytes());
        meta[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        meta[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        meta[40..48].copy_from_slice(&self.high_water.to_le_bytes());
        meta[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let checksum = fnv64a(&meta[..META_CHECKSUMMED_SIZE]);
        meta[META_CHECKSUMMED_SIZE..META_SIZE].copy_from_slice(&checksum.to_le_bytes());
    }
}

/// One element of a leaf node, borrowed from the node's bytes.
#[derive(Debug)]
pub(crate) struct LeafElement<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The byte range `start..start + len` inside a node of `node_len` bytes, if it fits.
fn span(start: usize, len: u32, node_len: usize) -> Option<std::ops::Range<usize>> {
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= node_len).then_some(start..end)
}

/// Where element `index` of a node starts, if its fixed part fits in the node.
fn element_start(node: &[u8], index: usize, element_size: usize) -> Option<usize> {
    let start = index
        .checked_mul(element_size)?
        .checked_add(PAGE_HEADER_SIZE)?;
    (start.checked_add(element_size)? <= node.len()).then_some(start)
}

/// Element `index` of the leaf node `node` (header included), checked to lie inside it.
/// `page` names the node in errors.
pub(crate) fn leaf_element(node: &[u8], index: usize, page: u64) -> Result<LeafElement<'_>, Error> {
    let start = element_start(node, index, LEAF_ELEMENT_SIZE)
        .ok_or_else(|| corrupt(page, format!("leaf element {index} lies outside the node")))?;
    let flags = u32_at(node, start);
    let pos = u32_at(node, start + 4);
    let key_len = u32_at(node, start + 8);
    let value_len = u32_at(node, start + 12);
    let key_start = usize::try_from(pos)
        .ok()
        .and_then(|pos| start.checked_add(pos));
    let key = key_start.and_then(|key_start| span(key_start, key_len, node.len()));
    let value = key
        .as_ref()
        .and_then(|key| span(key.end, value_len, node.len()));
    match (key, value) {
        (Some(key), Some(value)) => Ok(LeafElement {
            flags,
            key: &node[key],
            value: &node[value],
        }),
        _ => Err(corrupt(
            page,
            format!(
                "leaf element {index} (pos {pos}, key {key_len} bytes, value {value_len} \
                 bytes) points outside the node of {} bytes",
                node.len()
            ),
        )),
    }
}

/// Element `index` of the branch node `node`: the first key of a child and its page.
pub(crate) fn branch_element(node: &[u8], index: usize, page: u64) -> Result<(&[u8], u64), Error> {
    let start = element_start(node, index, BRANCH_ELEMENT_SIZE).ok_or_else(|| {
        corrupt(
            page,
            format!("branch element {index} lies outside the node"),
        )
    })?;
    let pos = u32_at(node, start);
    let key_len = u32_at(node, start + 4);
    let child = u64_at(node, start + 8);
    let key = usize::try_from(pos)
        .ok()
        .and_then(|pos| start.checked_add(pos))
        .and_then(|key_start| span(key_start, key_len, node.len()))
        .ok_or_else(|| {
            corrupt(
                page,
                format!(
                    "branch element {index} (pos {pos}, key {key_len} bytes) points outside \
                     the node of {} bytes",
                    node.len()
                ),
            )
        })?;
    Ok((&node[key], child))
}
