//! Writing a bbolt file in one pass from sorted input.
//!
//! The file is built bottom-up, like a bulk load: entries fill a leaf, a full leaf is
//! written and its first key and page id go to the branch level above, which is written
//! the same way when it fills. Memory holds one node per tree level, never the data.
//! Pages 0 to 2 are reserved at the start and written last: the two metas, which point
//! at the finished trees, and an empty freelist.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{
    check_page_size, Error, Meta, PageHeader, BRANCH_ELEMENT_SIZE, BRANCH_PAGE_FLAG,
    BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, FREELIST_PAGE_FLAG, KEY_BYTES_MAX, LEAF_ELEMENT_SIZE,
    LEAF_PAGE_FLAG, NODE_ELEMENTS_MAX, PAGE_HEADER_SIZE, PAGE_SIZE_DEFAULT, VALUE_BYTES_MAX,
};

/// The metas' page ids, and the freelist's.
const FREELIST_PAGE: u64 = 2;
/// The first page for tree nodes, after the metas and the freelist.
const FIRST_NODE_PAGE: u64 = 3;
/// The metas' transaction ids: bbolt writes meta `txid % 2`, and a snapshot's second meta
/// carries a lower txid than its first (bbolt's `Tx.WriteTo`).
const META0_TXID: u64 = 2;
const META1_TXID: u64 = 1;

/// Writes a bbolt file from buckets given in name order, each with its entries in key
/// order. Call [`Writer::begin_bucket`], then [`Writer::put`] for each entry, and so on
/// for the next bucket; [`Writer::finish`] completes the file.
pub struct Writer<W: Write + Seek> {
    pages: PageSink<W>,
    /// The root bucket's tree: one entry per finished bucket.
    root: TreeBuilder,
    /// The bucket being written, and its name.
    current: Option<(Vec<u8>, TreeBuilder)>,
}

impl Writer<BufWriter<File>> {
    /// Creates (or truncates) the file at `path` and writes a bbolt file into it. The
    /// file is open for reading too, so that [`append_trailer`] can take it from
    /// [`Writer::finish`].
    pub fn create(path: impl AsRef<Path>) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Writer::new(BufWriter::new(file), PAGE_SIZE_DEFAULT)
    }
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a bbolt file with pages of `page_size` bytes at the start of `sink`.
    pub fn new(mut sink: W, page_size: u32) -> Result<Self, Error> {
        check_page_size(page_size)?;
        let page_size = page_size as usize;
        sink.seek(SeekFrom::Start(0))?;
        // Reserved for the metas and the freelist, written by `finish`.
        sink.write_all(&vec![0; page_size * FIRST_NODE_PAGE as usize])?;
        Ok(Writer {
            pages: PageSink {
                sink,
                page_size,
                next_page: FIRST_NODE_PAGE,
            },
            root: TreeBuilder::new(page_size),
            current: None,
        })
    }

    /// Ends the current bucket, if any, and starts the bucket `name`, which must come
    /// after every earlier bucket's name.
    pub fn begin_bucket(&mut self, name: &[u8]) -> Result<(), Error> {
        check_key(name)?;
        if let Some(previous) = &self.root.last_key {
            if name <= previous.as_slice() {
                return Err(Error::BucketOrder {
                    previous: previous.clone(),
                    name: name.to_vec(),
                });
            }
        }
        self.end_bucket()?;
        // Reserves the name's place in order now; its value is set when it ends.
        self.root.last_key = Some(name.to_vec());
        self.current = Some((name.to_vec(), TreeBuilder::new(self.pages.page_size)));
        Ok(())
    }

    /// Adds an entry to the current bucket; `key` must come after the bucket's last key.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let Some((_, bucket)) = &mut self.current else {
            return Err(Error::NoBucket);
        };
        check_key(key)?;
        if value.len() > VALUE_BYTES_MAX {
            return Err(Error::ValueTooLarge(value.len()));
        }
        bucket.push(&mut self.pages, 0, key, value)
    }

    /// Ends the last bucket, writes the root bucket, the freelist and the metas, and
    /// returns the sink positioned at the end of the file (where a trailer would go).
    pub fn finish(mut self) -> Result<W, Error> {
        self.end_bucket()?;
        let root = self.root.finish(&mut self.pages)?;
        let page_size = self.pages.page_size;
        let meta = Meta {
            page_size: page_size as u32,
            flags: 0,
            root,
            sequence: 0,
            freelist: FREELIST_PAGE,
            high_water: self.pages.next_page,
            txid: META0_TXID,
        };
        let mut head = vec![0; page_size * FIRST_NODE_PAGE as usize];
        meta.encode(0, &mut head[..page_size]);
        Meta {
            txid: META1_TXID,
            ..meta
        }
        .encode(1, &mut head[page_size..2 * page_size]);
        PageHeader {
            id: FREELIST_PAGE,
            flags: FREELIST_PAGE_FLAG,
            count: 0,
            overflow: 0,
        }
        .encode(&mut head[2 * page_size..]);

        let sink = &mut self.pages.sink;
        sink.seek(SeekFrom::Start(0))?;
        sink.write_all(&head)?;
        sink.seek(SeekFrom::Start(self.pages.next_page * page_size as u64))?;
        sink.flush()?;
        Ok(self.pages.sink)
    }

    /// The bytes of nodes held in memory, waiting to be written.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        let current = self
            .current
            .as_ref()
            .map_or(0, |(_, tree)| tree.held_bytes());
        current + self.root.held_bytes()
    }

    /// Writes the current bucket's tree and enters it in the root bucket.
    fn end_bucket(&mut self) -> Result<(), Error> {
        let Some((name, mut bucket)) = self.current.take() else {
            return Ok(());
        };
        let root = bucket.finish(&mut self.pages)?;
        let mut value = [0; BUCKET_HEADER_SIZE];
        value[..8].copy_from_slice(&root.to_le_bytes());
        // The sequence (bytes 8..16) stays 0: etcd never calls NextSequence.
        self.root.last_key = None;
        self.root
            .push(&mut self.pages, BUCKET_LEAF_FLAG, &name, &value)
    }
}

/// Computes the SHA-256 of everything in `file` and appends it, as etcd's snapshot
/// stream does; returns the digest.
pub fn append_trailer<F: Read + Write + Seek>(file: &mut F) -> Result<[u8; 32], Error> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        hasher.update(&chunk[..read]);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    file.seek(SeekFrom::End(0))?;
    file.write_all(&digest)?;
    file.flush()?;
    Ok(digest)
}

fn check_key(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() {
        Err(Error::EmptyKey)
    } else if key.len() > KEY_BYTES_MAX {
        Err(Error::KeyTooLarge(key.len()))
    } else {
        Ok(())
    }
}

/// Where nodes go: the sink, and the next free page id.
struct PageSink<W> {
    sink: W,
    page_size: usize,
    /// The page id the next node gets; the sink's position is at its start.
    next_page: u64,
}

impl<W: Write> PageSink<W> {
    /// Writes `node` at the next page (with overflow pages if it needs them) and
    /// returns its page id.
    fn write(&mut self, node: &Node) -> Result<u64, Error> {
        let page = self.next_page;
        let pages = node.bytes.div_ceil(self.page_size);
        let overflow = u32::try_from(pages - 1)
            .expect("a node's pages are bounded by its values, at most 2 GiB");
        let mut out = vec![0; pages * self.page_size];
        let count = node.elements.len();
        assert!(count <= NODE_ELEMENTS_MAX, "node of {count} elements");
        PageHeader {
            id: page,
            flags: node.flags,
            count: count as u16,
            overflow,
        }
        .encode(&mut out);
        let element_size = node.element_size();
        let mut data = PAGE_HEADER_SIZE + count * element_size;
        for (index, element) in node.elements.iter().enumerate() {
            let start = PAGE_HEADER_SIZE + index * element_size;
            let pos = (data - start) as u32;
            let key_len = element.key.len() as u32;
            let header = &mut out[start..start + element_size];
            if node.flags == LEAF_PAGE_FLAG {
                header[0..4].copy_from_slice(&element.flags.to_le_bytes());
                header[4..8].copy_from_slice(&pos.to_le_bytes());
                header[8..12].copy_from_slice(&key_len.to_le_bytes());
                header[12..16].copy_from_slice(&(element.value.len() as u32).to_le_bytes());
            } else {
                header[0..4].copy_from_slice(&pos.to_le_bytes());
                header[4..8].copy_from_slice(&key_len.to_le_bytes());
                header[8..16].copy_from_slice(&element.child.to_le_bytes());
            }
            out[data..data + element.key.len()].copy_from_slice(&element.key);
            data += element.key.len();
            out[data..data + element.value.len()].copy_from_slice(&element.value);
            data += element.value.len();
        }
        assert_eq!(data, node.bytes, "node size accounting");
        self.sink.write_all(&out)?;
        self.next_page += pages as u64;
        Ok(page)
    }
}

/// One element of a node being built.
struct Element {
    flags: u32,
    key: Vec<u8>,
    /// A leaf element's value (empty in a branch).
    value: Vec<u8>,
    /// A branch element's child page (0 in a leaf).
    child: u64,
}

/// A node being filled.
struct Node {
    /// [`LEAF_PAGE_FLAG`] or [`BRANCH_PAGE_FLAG`].
    flags: u16,
    elements: Vec<Element>,
    /// The node's encoded size: header, element headers, keys and values.
    bytes: usize,
    /// How many nodes of this level have been written already.
    written: u64,
}

impl Node {
    fn new(flags: u16) -> Node {
        Node {
            flags,
            elements: Vec::new(),
            bytes: PAGE_HEADER_SIZE,
            written: 0,
        }
    }

    fn element_size(&self) -> usize {
        if self.flags == LEAF_PAGE_FLAG {
            LEAF_ELEMENT_SIZE
        } else {
            BRANCH_ELEMENT_SIZE
        }
    }

    /// Whether an element of `key_len + value_len` data bytes must start a new node: it
    /// would take the node past a page, or past bbolt's element count. A leaf may hold a
    /// single element of any size (on overflow pages); a branch holds two at least, so
    /// that each level has fewer nodes than the one below and the tree ends.
    fn is_full_for(&self, data_len: usize, page_size: usize) -> bool {
        let minimum = if self.flags == LEAF_PAGE_FLAG { 1 } else { 2 };
        self.elements.len() >= minimum
            && (self.bytes + self.element_size() + data_len > page_size
                || self.elements.len() >= NODE_ELEMENTS_MAX)
    }

    fn push(&mut self, element: Element) {
        self.bytes += self.element_size() + element.key.len() + element.value.len();
        self.elements.push(element);
    }

    /// Writes the node, empties it, and returns its first key and page id for the level
    /// above.
    fn flush<W: Write>(&mut self, pages: &mut PageSink<W>) -> Result<(Vec<u8>, u64), Error> {
        let page = pages.write(self)?;
        let first_key = self
            .elements
            .drain(..)
            .next()
            .map(|element| element.key)
            .unwrap_or_default();
        self.bytes = PAGE_HEADER_SIZE;
        self.written += 1;
        Ok((first_key, page))
    }
}

/// One B+tree being written from sorted entries.
struct TreeBuilder {
    page_size: usize,
    leaf: Node,
    /// The branch nodes being filled, from the level above the leaves upwards.
    branches: Vec<Node>,
    /// The last key pushed, to refuse input out of order.
    last_key: Option<Vec<u8>>,
}

impl TreeBuilder {
    fn new(page_size: usize) -> TreeBuilder {
        TreeBuilder {
            page_size,
            leaf: Node::new(LEAF_PAGE_FLAG),
            branches: Vec::new(),
            last_key: None,
        }
    }

    fn push<W: Write>(
        &mut self,
        pages: &mut PageSink<W>,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Error> {
        match &mut self.last_key {
            Some(previous) if key <= previous.as_slice() => {
                return Err(Error::KeyOrder {
                    previous: previous.clone(),
                    key: key.to_vec(),
                });
            }
            Some(previous) => {
                previous.clear();
                previous.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        if self
            .leaf
            .is_full_for(key.len() + value.len(), self.page_size)
        {
            let (first_key, page) = self.leaf.flush(pages)?;
            self.push_child(pages, 0, first_key, page)?;
        }
        self.leaf.push(Element {
            flags,
            key: key.to_vec(),
            value: value.to_vec(),
            child: 0,
        });
        Ok(())
    }

    /// Adds a written node (its first key and page) to branch level `level`, writing
    /// that level's node first if it is full.
    fn push_child<W: Write>(
        &mut self,
        pages: &mut PageSink<W>,
        level: usize,
        key: Vec<u8>,
        child: u64,
    ) -> Result<(), Error> {
        if level == self.branches.len() {
            self.branches.push(Node::new(BRANCH_PAGE_FLAG));
        }
        if self.branches[level].is_full_for(key.len(), self.page_size) {
            let (first_key, page) = self.branches[level].flush(pages)?;
            self.push_child(pages, level + 1, first_key, page)?;
        }
        self.branches[level].push(Element {
            flags: 0,
            key,
            value: Vec::new(),
            child,
        });
        Ok(())
    }

    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.leaf.bytes + self.branches.iter().map(|node| node.bytes).sum::<usize>()
    }

    /// Writes what remains of every level and returns the root's page id.
    fn finish<W: Write>(&mut self, pages: &mut PageSink<W>) -> Result<u64, Error> {
        // The last leaf holds an entry unless the tree is empty (a leaf is written only
        // when an entry arrives that does not fit); an empty tree is one empty leaf.
        let (key, leaf) = self.leaf.flush(pages)?;
        let mut carry = (key, leaf);
        let mut level = 0;
        loop {
            if level == self.branches.len() {
                return Ok(carry.1);
            }
            let (key, page) = carry;
            self.push_child(pages, level, key, page)?;
            let node = &mut self.branches[level];
            if node.written == 0 && node.elements.len() == 1 {
                // Nothing else at this level, so nothing above it: its one child is the
                // root.
                return Ok(node.elements[0].child);
            }
            carry = node.flush(pages)?;
            level += 1;
        }
    }
}
