//! HPACK (RFC 7541), as much of it as the authority rewrite needs: a decoder that follows
//! the client's dynamic table, and an encoder that never uses one.
//!
//! # Design
//!
//! A header block is a sequence of representations (§6): an index into the table, a
//! literal field that may or may not be added to the dynamic table, or a change to the
//! table's size. Table indexes 1 to 61 are the static table (Appendix A); 62 and up are the
//! dynamic table, newest entry first. [`Decoder`] keeps the dynamic table exactly as the
//! client's encoder does, so it must see every header block of the connection, in order.
//!
//! [`encode_without_table`] writes fields back using only the static table and literals
//! that are not indexed. The decoder on the other side (h2's) then never adds an entry, so
//! its table stays empty whatever the client's encoder did: nothing has to be kept in step
//! with it.
//!
//! Huffman-coded strings (§5.2, Appendix B) are decoded with a binary tree built at compile
//! time from the code table; the encoder writes every string raw.
//!
//! # Limits
//!
//! Everything here reads bytes a client sent, so nothing may panic or allocate without
//! bound: integers are capped at [`INTEGER_MAX`], a size update above the table limit is an
//! error, and [`Decoder::decode`] stops once the decoded list passes the caller's limit
//! (each indexed field is one byte on the wire but up to a whole table entry decoded).

use std::collections::VecDeque;

/// Why a header block cannot be decoded; each is a COMPRESSION_ERROR in HTTP/2 terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("header block ends inside a representation")]
    Truncated,
    #[error("integer in header block over {INTEGER_MAX}")]
    IntegerOverflow,
    #[error("header table index {0} out of range")]
    BadIndex(usize),
    #[error("invalid Huffman-coded string")]
    Huffman,
    #[error("dynamic table size update to {size} over the limit of {limit}")]
    TableSizeOverLimit { size: usize, limit: usize },
    #[error("dynamic table size update after a header field")]
    LateTableSizeUpdate,
    #[error("decoded header list over {0} bytes")]
    ListTooLarge(usize),
}

/// Larger integers are refused: every length, index and size in a block fits well below.
const INTEGER_MAX: usize = u32::MAX as usize;

/// What each table entry costs beyond its name and value (§4.1).
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Sent as "never indexed" (§6.2.3). An intermediary must send such a field on in the
    /// same representation, so that a value the client marked sensitive stays out of every
    /// table downstream.
    pub never_indexed: bool,
}

impl Field {
    /// The size of the field as a table entry, which is also its size in
    /// SETTINGS_MAX_HEADER_LIST_SIZE terms.
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// Decodes the header blocks of one connection, keeping the encoder's dynamic table.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: dynamic index 62 is `entries[0]`.
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// The sum of the entries' sizes. Invariant: `table_bytes <= table_bytes_max`.
    table_bytes: usize,
    /// The table size the encoder last chose. Invariant: `<= table_bytes_limit`.
    table_bytes_max: usize,
    /// The most the encoder may choose (the SETTINGS_HEADER_TABLE_SIZE we stand for).
    table_bytes_limit: usize,
}

impl Decoder {
    /// A decoder whose table starts at, and may never grow past, `table_bytes_limit` (4,096
    /// in HTTP/2 unless the decoding side announced another value).
    pub fn new(table_bytes_limit: usize) -> Self {
        Decoder {
            entries: VecDeque::new(),
            table_bytes: 0,
            table_bytes_max: table_bytes_limit,
            table_bytes_limit,
        }
    }

    /// Decodes one complete header block, updating the dynamic table as it goes. The
    /// decoded list may take `list_bytes_max` bytes at most, counted as table entries.
    ///
    /// After an error the table is no longer the encoder's, and the connection has to end
    /// (HTTP/2 makes a decoding error fatal to the connection for the same reason).
    pub fn decode(&mut self, block: &[u8], list_bytes_max: usize) -> Result<Vec<Field>, Error> {
        let mut reader = Reader { bytes: block };
        let mut fields = Vec::new();
        let mut list_bytes = 0usize;
        while let Some(first) = reader.next_byte() {
            let field = if first & 0x80 != 0 {
                // §6.1: indexed header field.
                let index = reader.integer(first, 7)?;
                let (name, value) = self.entry(index)?;
                Field {
                    name: name.to_vec(),
                    value: value.to_vec(),
                    never_indexed: false,
                }
            } else if first & 0x40 != 0 {
                // §6.2.1: literal with incremental indexing.
                let field = self.literal(&mut reader, first, 6, false)?;
                self.insert(field.name.clone(), field.value.clone());
                field
            } else if first & 0x20 != 0 {
                // §6.3: dynamic table size update, allowed only before the first field
                // (§4.2).
                if !fields.is_empty() {
                    return Err(Error::LateTableSizeUpdate);
                }
                let size = reader.integer(first, 5)?;
                self.resize(size)?;
                continue;
            } else {
                // §6.2.2 (0000xxxx) and §6.2.3 (0001xxxx): literal without indexing, or
                // never indexed.
                self.literal(&mut reader, first, 4, first & 0x10 != 0)?
            };
            list_bytes = list_bytes.saturating_add(field.size());
            if list_bytes > list_bytes_max {
                return Err(Error::ListTooLarge(list_bytes_max));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    /// A literal field whose name is indexed in the low `prefix_bits` of `first`, or
    /// follows as a string when that index is 0.
    fn literal(
        &self,
        reader: &mut Reader<'_>,
        first: u8,
        prefix_bits: u32,
        never_indexed: bool,
    ) -> Result<Field, Error> {
        let name = match reader.integer(first, prefix_bits)? {
            0 => reader.string()?,
            index => self.entry(index)?.0.to_vec(),
        };
        let value = reader.string()?;
        Ok(Field {
            name,
            value,
            never_indexed,
        })
    }

    /// The name and value at `index` of the combined static and dynamic table.
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        if index == 0 {
            return Err(Error::BadIndex(index));
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok((name, value));
        }
        self.entries
            .get(index - 1 - STATIC_TABLE.len())
            .map(|(name, value)| (name.as_slice(), value.as_slice()))
            .ok_or(Error::BadIndex(index))
    }

    /// Adds an entry, evicting the oldest ones to make room (§4.4). An entry larger than
    /// the whole table empties it and is not added.
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        self.evict_to(self.table_bytes_max.saturating_sub(size));
        if size <= self.table_bytes_max {
            self.entries.push_front((name, value));
            self.table_bytes += size;
        }
        assert!(
            self.table_bytes <= self.table_bytes_max,
            "table holds {} bytes, over its maximum of {}",
            self.table_bytes,
            self.table_bytes_max
        );
    }

    /// Applies a dynamic table size update (§4.3).
    fn resize(&mut self, size: usize) -> Result<(), Error> {
        if size > self.table_bytes_limit {
            return Err(Error::TableSizeOverLimit {
                size,
                limit: self.table_bytes_limit,
            });
        }
        self.table_bytes_max = size;
        self.evict_to(size);
        Ok(())
    }

    /// Evicts the oldest entries until the table holds `bytes` at most.
    fn evict_to(&mut self, bytes: usize) {
        while self.table_bytes > bytes {
            let (name, value) = self
                .entries
                .pop_back()
                .expect("a table with bytes in it has an entry");
            self.table_bytes -= name.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        }
    }
}

/// The unread rest of a header block.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn next_byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], Error> {
        if length > self.bytes.len() {
            return Err(Error::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    /// An integer (§5.1) whose first part is the low `prefix_bits` of `first`.
    fn integer(&mut self, first: u8, prefix_bits: u32) -> Result<usize, Error> {
        let prefix_max = (1u64 << prefix_bits) - 1;
        let mut value = u64::from(first) & prefix_max;
        if value < prefix_max {
            return Ok(value as usize);
        }
        let mut shift = 0u32;
        loop {
            let byte = self.next_byte().ok_or(Error::Truncated)?;
            value += u64::from(byte & 0x7f) << shift;
            // Checked on every byte, so `value` stays far from overflowing a u64 and the
            // number of continuation bytes is bounded (§5.1 allows any limit).
            if value > INTEGER_MAX as u64 {
                return Err(Error::IntegerOverflow);
            }
            if byte & 0x80 == 0 {
                return Ok(value as usize);
            }
            shift += 7;
            if shift > 28 {
                return Err(Error::IntegerOverflow);
            }
        }
    }

    /// A string literal (§5.2), Huffman-decoded if its H bit is set.
    fn string(&mut self) -> Result<Vec<u8>, Error> {
        let first = self.next_byte().ok_or(Error::Truncated)?;
        let length = self.integer(first, 7)?;
        let bytes = self.take(length)?;
        if first & 0x80 != 0 {
            huffman_decode(bytes)
        } else {
            Ok(bytes.to_vec())
        }
    }
}

/// Appends `fields` to `out` as a header block that neither reads nor changes the
/// decoder's dynamic table: a static index when the static table has the exact field, else
/// a literal that is not indexed (never indexed if it came that way), its name by static
/// index when the static table has the name. Strings are written raw.
pub fn encode_without_table(fields: &[Field], out: &mut Vec<u8>) {
    for field in fields {
        let exact = STATIC_TABLE
            .iter()
            .position(|&(name, value)| name == field.name && value == field.value);
        if let (Some(position), false) = (exact, field.never_indexed) {
            put_integer(out, 0x80, 7, position + 1);
            continue;
        }
        let flags = if field.never_indexed { 0x10 } else { 0x00 };
        match STATIC_TABLE
            .iter()
            .position(|&(name, _)| name == field.name)
        {
            Some(position) => put_integer(out, flags, 4, position + 1),
            None => {
                put_integer(out, flags, 4, 0);
                put_string(out, &field.name);
            }
        }
        put_string(out, &field.value);
    }
}

/// Appends `value` as an integer with a `prefix_bits` prefix, `flags` in the bits above it.
fn put_integer(out: &mut Vec<u8>, flags: u8, prefix_bits: u32, value: usize) {
    let prefix_max = (1usize << prefix_bits) - 1;
    if value < prefix_max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | prefix_max as u8);
    let mut rest = value - prefix_max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends `bytes` as a raw (not Huffman-coded) string literal.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_integer(out, 0x00, 7, bytes.len());
    out.extend_from_slice(bytes);
}

/// Decodes a Huffman-coded string (§5.2): walks the tree bit by bit, emitting a symbol at
/// each leaf. The bits after the last symbol are padding and must be fewer than 8 and all
/// ones (a prefix of EOS); EOS itself must not appear.
fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 2);
    let mut node = 0usize;
    let mut padding_bits = 0u32;
    let mut padding_all_ones = true;
    for &byte in bytes {
        for shift in (0..8).rev() {
            let bit = (byte >> shift) & 1;
            padding_bits += 1;
            padding_all_ones &= bit == 1;
            let child = HUFFMAN_TREE[node][bit as usize];
            if child & HUFFMAN_LEAF == 0 {
                node = usize::from(child);
                continue;
            }
            let symbol = child & !HUFFMAN_LEAF;
            if symbol == HUFFMAN_EOS {
                return Err(Error::Huffman);
            }
            out.push(symbol as u8);
            node = 0;
            padding_bits = 0;
            padding_all_ones = true;
        }
    }
    if padding_bits > 7 || !padding_all_ones {
        return Err(Error::Huffman);
    }
    Ok(out)
}

/// The end-of-string symbol, which follows the 256 byte values in the code table.
const HUFFMAN_EOS: u16 = 256;
/// Marks a child in [`HUFFMAN_TREE`] as a leaf; the symbol is in the low bits.
const HUFFMAN_LEAF: u16 = 0x8000;
/// A complete prefix code for 257 symbols has 256 inner nodes.
const HUFFMAN_NODES: usize = 256;

/// The Huffman code as a binary tree: `HUFFMAN_TREE[node][bit]` is the next inner node, or
/// a symbol with [`HUFFMAN_LEAF`] set. Node 0 is the root. Every inner node has both
/// children, because the code is complete (checked when the tree is built), so a walk
/// never falls off the tree.
static HUFFMAN_TREE: [[u16; 2]; HUFFMAN_NODES] = huffman_tree();

/// Builds [`HUFFMAN_TREE`] from [`HUFFMAN_CODES`] at compile time; a code table that is
/// not a complete prefix code fails the build.
const fn huffman_tree() -> [[u16; 2]; HUFFMAN_NODES] {
    let mut tree = [[0u16; 2]; HUFFMAN_NODES];
    let mut nodes = 1;
    let mut symbol = 0;
    while symbol < HUFFMAN_CODES.len() {
        let code = HUFFMAN_CODES[symbol];
        let bits = HUFFMAN_CODE_BITS[symbol] as u32;
        let mut node = 0;
        let mut depth = 1;
        // Inner nodes along the code's path, most significant bit first.
        while depth < bits {
            let bit = ((code >> (bits - depth)) & 1) as usize;
            if tree[node][bit] == 0 {
                assert!(
                    nodes < HUFFMAN_NODES,
                    "Huffman code has too many inner nodes"
                );
                tree[node][bit] = nodes as u16;
                nodes += 1;
            }
            assert!(
                tree[node][bit] & HUFFMAN_LEAF == 0,
                "a Huffman code is a prefix of another"
            );
            node = tree[node][bit] as usize;
            depth += 1;
        }
        let bit = (code & 1) as usize;
        assert!(
            tree[node][bit] == 0,
            "a Huffman code is a prefix of another"
        );
        tree[node][bit] = HUFFMAN_LEAF | symbol as u16;
        symbol += 1;
    }
    let mut node = 0;
    while node < HUFFMAN_NODES {
        assert!(
            tree[node][0] != 0 && tree[node][1] != 0,
            "the Huffman code is not complete"
        );
        node += 1;
    }
    tree
}

/// The static table (Appendix A): index `i + 1` is `STATIC_TABLE[i]`.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The Huffman code (Appendix B): symbol `s` (a byte value, or 256 for EOS) is the low
/// `HUFFMAN_CODE_BITS[s]` bits of `HUFFMAN_CODES[s]`.
const HUFFMAN_CODES: [u32; 257] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee, 0x3fffffff,
];
const HUFFMAN_CODE_BITS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.into(),
            value: value.into(),
            never_indexed: false,
        }
    }

    fn table(decoder: &Decoder) -> Vec<(String, String)> {
        decoder
            .entries
            .iter()
            .map(|(name, value)| {
                (
                    String::from_utf8(name.clone()).unwrap(),
                    String::from_utf8(value.clone()).unwrap(),
                )
            })
            .collect()
    }

    /// One block of an RFC 7541 Appendix C example: the encoded block, the fields it
    /// decodes to, and the dynamic table (newest first) and its size afterwards.
    struct Step {
        block: &'static str,
        fields: &'static [(&'static str, &'static str)],
        table: &'static [(&'static str, &'static str)],
        table_bytes: usize,
    }

    fn run(table_bytes_limit: usize, steps: &[Step]) {
        let mut decoder = Decoder::new(table_bytes_limit);
        for (i, step) in steps.iter().enumerate() {
            let fields = decoder.decode(&hex(step.block), usize::MAX).unwrap();
            let expected: Vec<Field> = step.fields.iter().map(|&(n, v)| field(n, v)).collect();
            assert_eq!(fields, expected, "block {i}");
            let expected: Vec<(String, String)> = step
                .table
                .iter()
                .map(|&(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(table(&decoder), expected, "table after block {i}");
            assert_eq!(
                decoder.table_bytes, step.table_bytes,
                "size after block {i}"
            );
        }
    }

    const REQUEST_1: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const REQUEST_2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQUEST_3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const TABLE_1: &[(&str, &str)] = &[(":authority", "www.example.com")];
    const TABLE_2: &[(&str, &str)] = &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];
    const TABLE_3: &[(&str, &str)] = &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        run(
            4096,
            &[
                Step {
                    block: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    fields: REQUEST_1,
                    table: TABLE_1,
                    table_bytes: 57,
                },
                Step {
                    block: "8286 84be 5808 6e6f 2d63 6163 6865",
                    fields: REQUEST_2,
                    table: TABLE_2,
                    table_bytes: 110,
                },
                Step {
                    block: "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d
                            7661 6c75 65",
                    fields: REQUEST_3,
                    table: TABLE_3,
                    table_bytes: 164,
                },
            ],
        );
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        run(
            4096,
            &[
                Step {
                    block: "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                    fields: REQUEST_1,
                    table: TABLE_1,
                    table_bytes: 57,
                },
                Step {
                    block: "8286 84be 5886 a8eb 1064 9cbf",
                    fields: REQUEST_2,
                    table: TABLE_2,
                    table_bytes: 110,
                },
                Step {
                    block: "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                    fields: REQUEST_3,
                    table: TABLE_3,
                    table_bytes: 164,
                },
            ],
        );
    }

    /// Responses in a 256-byte table: each block evicts the oldest entries (§4.4).
    #[test]
    fn rfc7541_c5_responses_evict() {
        const DATE_1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
        const DATE_2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
        const LOCATION: &str = "https://www.example.com";
        const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        run(
            256,
            &[
                Step {
                    block: "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120
                            4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768
                            7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    fields: &[
                        (":status", "302"),
                        ("cache-control", "private"),
                        ("date", DATE_1),
                        ("location", LOCATION),
                    ],
                    table: &[
                        ("location", LOCATION),
                        ("date", DATE_1),
                        ("cache-control", "private"),
                        (":status", "302"),
                    ],
                    table_bytes: 222,
                },
                Step {
                    block: "4803 3330 37c1 c0bf",
                    fields: &[
                        (":status", "307"),
                        ("cache-control", "private"),
                        ("date", DATE_1),
                        ("location", LOCATION),
                    ],
                    table: &[
                        (":status", "307"),
                        ("location", LOCATION),
                        ("date", DATE_1),
                        ("cache-control", "private"),
                    ],
                    table_bytes: 222,
                },
                Step {
                    block: "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a
                            3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153
                            444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49
                            553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                            3d31",
                    fields: &[
                        (":status", "200"),
                        ("cache-control", "private"),
                        ("date", DATE_2),
                        ("location", LOCATION),
                        ("content-encoding", "gzip"),
                        ("set-cookie", COOKIE),
                    ],
                    table: &[
                        ("set-cookie", COOKIE),
                        ("content-encoding", "gzip"),
                        ("date", DATE_2),
                    ],
                    table_bytes: 215,
                },
            ],
        );
    }

    /// RFC 7541 C.1: 10 and 1337 with a 5-bit prefix, 42 with an 8-bit prefix.
    #[test]
    fn integers_follow_rfc7541_c1() {
        for (value, prefix_bits, encoded) in [
            (10, 5, vec![0x0a]),
            (1337, 5, vec![0x1f, 0x9a, 0x0a]),
            (42, 8, vec![0x2a]),
        ] {
            let mut out = Vec::new();
            put_integer(&mut out, 0, prefix_bits, value);
            assert_eq!(out, encoded, "encoding {value}");
            let mut reader = Reader { bytes: &encoded };
            let first = reader.next_byte().unwrap();
            assert_eq!(reader.integer(first, prefix_bits), Ok(value));
            assert!(reader.bytes.is_empty());
        }
    }

    /// Encodes with the code table directly, to check the tree against every symbol.
    fn huffman_encode(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pending = 0u64;
        let mut pending_bits = 0u32;
        for &byte in bytes {
            let bits = u32::from(HUFFMAN_CODE_BITS[usize::from(byte)]);
            pending = (pending << bits) | u64::from(HUFFMAN_CODES[usize::from(byte)]);
            pending_bits += bits;
            while pending_bits >= 8 {
                pending_bits -= 8;
                out.push((pending >> pending_bits) as u8);
            }
        }
        if pending_bits > 0 {
            // Pad with the most significant bits of EOS (all ones).
            let pad = 8 - pending_bits;
            out.push(((pending << pad) | ((1 << pad) - 1)) as u8);
        }
        out
    }

    #[test]
    fn huffman_decodes_every_byte_value_and_the_rfc_strings() {
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(
            huffman_decode(&huffman_encode(&every_byte)).unwrap(),
            every_byte
        );
        assert_eq!(
            huffman_encode(b"www.example.com"),
            hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
        );
        assert_eq!(
            huffman_decode(&hex("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3")).unwrap(),
            b"https://www.example.com"
        );
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        // '0' is 00000: three bits of padding that are zeros.
        assert_eq!(huffman_decode(&[0x00]), Err(Error::Huffman));
        // '0' then a full byte of ones: padding of 11 bits.
        assert_eq!(huffman_decode(&[0x07, 0xff]), Err(Error::Huffman));
        // EOS (30 ones) itself.
        assert_eq!(huffman_decode(&hex("ffff fffc")), Err(Error::Huffman));
        assert_eq!(huffman_decode(&[0x07]).unwrap(), b"0");
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let cases: &[(&str, &str, Error)] = &[
            ("index 0", "80", Error::BadIndex(0)),
            ("index past the tables", "be", Error::BadIndex(62)),
            (
                "literal name index past the tables",
                "7f00 0161",
                Error::BadIndex(63),
            ),
            ("integer cut short", "ff", Error::Truncated),
            (
                "integer too long",
                "ff ff ff ff ff ff 01",
                Error::IntegerOverflow,
            ),
            (
                "string longer than the block",
                "0003 6162",
                Error::Truncated,
            ),
            ("value missing", "0001 61", Error::Truncated),
            ("bad huffman string", "0081 00 00", Error::Huffman),
            (
                "table size over the limit",
                "3fe2 1f",
                Error::TableSizeOverLimit {
                    size: 4097,
                    limit: 4096,
                },
            ),
            (
                "size update after a field",
                "82 20",
                Error::LateTableSizeUpdate,
            ),
        ];
        for (what, block, error) in cases {
            let mut decoder = Decoder::new(4096);
            assert_eq!(
                decoder.decode(&hex(block), usize::MAX).as_ref(),
                Err(error),
                "{what}"
            );
        }
    }

    /// One indexed byte can stand for a whole table entry, so the limit is on what the
    /// block decodes to, not on its length.
    #[test]
    fn decoded_list_is_limited() {
        let mut decoder = Decoder::new(4096);
        // "a": 4,000 x's, added to the table, then indexed 300 times.
        let mut block = vec![0x40, 0x01, b'a', 0x7f, 0xa1, 0x1e];
        block.extend(std::iter::repeat_n(b'x', 4000));
        block.extend(std::iter::repeat_n(0xbe, 300));
        assert_eq!(
            decoder.decode(&block, 1 << 20),
            Err(Error::ListTooLarge(1 << 20))
        );
    }

    #[test]
    fn size_update_evicts_and_then_allows_growth_up_to_the_limit() {
        let mut decoder = Decoder::new(4096);
        decoder
            .decode(
                &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
                usize::MAX,
            )
            .unwrap();
        assert_eq!(decoder.table_bytes, 57);
        // Size 0 empties the table; 4096 in the same block restores the maximum.
        decoder.decode(&hex("20 3fe1 1f"), usize::MAX).unwrap();
        assert!(decoder.entries.is_empty());
        assert_eq!(decoder.table_bytes_max, 4096);
        assert_eq!(
            decoder.decode(&hex("be"), usize::MAX),
            Err(Error::BadIndex(62))
        );
    }

    #[test]
    fn encoding_without_table_round_trips_and_leaves_the_table_empty() {
        let fields = vec![
            field(":method", "POST"),
            field(":scheme", "http"),
            field(":path", "/etcdserverpb.Maintenance/Status"),
            field(":authority", "127.0.0.1:2379"),
            field("content-type", "application/grpc"),
            field("user-agent", "grpc-go/1.26.0"),
            field("te", "trailers"),
            field("x-long", &"v".repeat(300)),
            Field {
                never_indexed: true,
                ..field("authorization", "secret")
            },
            Field {
                never_indexed: true,
                ..field(":method", "GET")
            },
        ];
        let mut block = Vec::new();
        encode_without_table(&fields, &mut block);
        // Static matches are one byte; the sensitive ones stay literals, never indexed.
        assert_eq!(block[0], 0x83);
        assert_eq!(block[1], 0x86);
        let mut decoder = Decoder::new(4096);
        assert_eq!(decoder.decode(&block, usize::MAX).unwrap(), fields);
        assert!(decoder.entries.is_empty());
        assert_eq!(decoder.table_bytes, 0);
    }

    proptest::proptest! {
        /// Whatever the bytes, decoding returns; it never panics.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            blocks in vec(vec(0..=255u8, 0..64), 1..8)
        ) {
            let mut decoder = Decoder::new(4096);
            for block in &blocks {
                let _ = decoder.decode(block, 1 << 16);
            }
        }
    }
}
