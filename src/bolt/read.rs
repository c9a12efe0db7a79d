//! Reading a bbolt file page by page: the meta, the top-level buckets, their entries.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{
    branch_element, corrupt, leaf_element, u64_at, Error, Meta, PageHeader, BRANCH_PAGE_FLAG,
    BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, FREELIST_COUNT_OVERFLOW, FREELIST_PAGE_FLAG,
    LEAF_PAGE_FLAG, PAGE_HEADER_SIZE, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, PAGE_SIZE_MIN,
    TRAILER_ALIGNMENT, TRAILER_SIZE,
};

/// The largest node (a page and its overflow) read by default. etcd's values are at most
/// `--max-request-bytes` (1.5 MiB unless raised), so its nodes stay far below this.
const NODE_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// How deep a tree may go. A B+tree whose branches hold two children or more reaches
/// this depth only with more pages than any file holds, so a deeper path is a loop.
const TREE_DEPTH_MAX: usize = 64;

/// A bbolt file opened for reading. Pages are read when needed; nothing holds the file.
pub struct Reader<R> {
    source: R,
    /// The bbolt image's length: the source's, less the trailer if there is one.
    data_len: u64,
    meta: Meta,
    trailer: Option<[u8; 32]>,
    /// Nodes larger than this are refused rather than read into memory.
    node_bytes_max: u64,
}

/// A top-level bucket: its name and where its tree is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub name: Vec<u8>,
    pub sequence: u64,
    root: BucketRoot,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum BucketRoot {
    /// The page id of the tree's root node.
    Page(u64),
    /// An inline bucket's only leaf node, as stored after the bucket header.
    Inline(Vec<u8>),
}

impl Bucket {
    /// Whether the bucket's entries sit inside its entry in the root bucket.
    pub fn is_inline(&self) -> bool {
        matches!(self.root, BucketRoot::Inline(_))
    }

    /// The page of the bucket's root node (`None` for an inline bucket).
    pub fn root_page(&self) -> Option<u64> {
        match self.root {
            BucketRoot::Page(page) => Some(page),
            BucketRoot::Inline(_) => None,
        }
    }

    /// Parses a bucket's value as stored in its parent: {root u64, sequence u64}, and for
    /// an inline bucket (root 0) its leaf page after that.
    fn parse(name: &[u8], value: &[u8]) -> Result<Bucket, Error> {
        let fault = |reason: String| Error::CorruptBucket {
            name: name.to_vec(),
            reason,
        };
        if value.len() < BUCKET_HEADER_SIZE {
            return Err(fault(format!("value of {} bytes", value.len())));
        }
        let root = u64_at(value, 0);
        let sequence = u64_at(value, 8);
        let root = if root == 0 {
            let page = &value[BUCKET_HEADER_SIZE..];
            if page.len() < PAGE_HEADER_SIZE {
                return Err(fault(format!("inline page of {} bytes", page.len())));
            }
            BucketRoot::Inline(page.to_vec())
        } else {
            BucketRoot::Page(root)
        };
        Ok(Bucket {
            name: name.to_vec(),
            sequence,
            root,
        })
    }
}

/// One entry of a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    /// The value; for a nested bucket, its bucket value (root and sequence, and its
    /// inline page if it has one).
    pub value: Vec<u8>,
    /// Whether the entry is a nested bucket (etcd nests none).
    pub nested_bucket: bool,
}

impl Reader<File> {
    /// Opens the bbolt file (or etcd snapshot) at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Reader::new(File::open(path)?)
    }
}

impl<R: Read + Seek> Reader<R> {
    /// Reads the meta pages of the bbolt image in `source` and picks the current one.
    pub fn new(mut source: R) -> Result<Self, Error> {
        let len = source.seek(SeekFrom::End(0))?;
        let has_trailer = len % TRAILER_ALIGNMENT == TRAILER_SIZE;
        let data_len = if has_trailer { len - TRAILER_SIZE } else { len };
        let trailer = if has_trailer {
            let mut digest = [0; 32];
            source.seek(SeekFrom::Start(data_len))?;
            source.read_exact(&mut digest)?;
            Some(digest)
        } else {
            None
        };

        let meta0 = read_meta(&mut source, 0, data_len)?;
        // Meta 1 sits one page in; the page size comes from meta 0 when it is valid. When
        // it is not, every page size is tried, and a meta that agrees with its own offset
        // is taken.
        let meta1 = match &meta0 {
            Ok(meta) => read_meta(&mut source, u64::from(meta.page_size), data_len)?,
            Err(_) => {
                // Reported when no page size works: what is wrong where bbolt would look.
                let mut found = Err("no meta at any page size".to_string());
                let mut page_size = PAGE_SIZE_MIN;
                while page_size <= PAGE_SIZE_MAX {
                    match read_meta(&mut source, u64::from(page_size), data_len)? {
                        Ok(meta) if meta.page_size == page_size => {
                            found = Ok(meta);
                            break;
                        }
                        Ok(_) => {}
                        Err(reason) if page_size == PAGE_SIZE_DEFAULT => found = Err(reason),
                        Err(_) => {}
                    }
                    page_size *= 2;
                }
                found
            }
        };
        // bbolt's choice: the valid meta with the higher txid, the other if that fails.
        let meta = match (meta0, meta1) {
            (Ok(meta0), Ok(meta1)) => {
                if meta1.txid > meta0.txid {
                    meta1
                } else {
                    meta0
                }
            }
            (Ok(meta), Err(_)) | (Err(_), Ok(meta)) => meta,
            (Err(meta0), Err(meta1)) => return Err(Error::NoValidMeta { meta0, meta1 }),
        };
        let needed = meta.high_water.saturating_mul(u64::from(meta.page_size));
        if needed > data_len {
            return Err(Error::Truncated {
                needed,
                len: data_len,
            });
        }
        Ok(Reader {
            source,
            data_len,
            meta,
            trailer,
            node_bytes_max: NODE_BYTES_MAX_DEFAULT,
        })
    }

    /// Sets the largest node (page and overflow pages) the reader will load.
    pub fn with_node_bytes_max(mut self, node_bytes_max: u64) -> Self {
        self.node_bytes_max = node_bytes_max;
        self
    }

    /// The current meta page.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// The bbolt image's length in bytes (the trailer not counted).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The SHA-256 trailer, if the file has one.
    pub fn trailer(&self) -> Option<&[u8; 32]> {
        self.trailer.as_ref()
    }

    /// Checks the trailer against a SHA-256 of the bbolt image (read in full, in pieces).
    pub fn verify_trailer(&mut self) -> Result<(), Error> {
        let Some(expected) = self.trailer else {
            return Err(Error::NoTrailer);
        };
        self.source.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha256::new();
        let mut remaining = self.data_len;
        let mut chunk = vec![0; 1 << 16];
        while remaining > 0 {
            let take = usize::try_from(remaining.min(chunk.len() as u64)).unwrap_or(chunk.len());
            self.source.read_exact(&mut chunk[..take])?;
            hasher.update(&chunk[..take]);
            remaining -= take as u64;
        }
        if hasher.finalize().as_slice() == expected {
            Ok(())
        } else {
            Err(Error::TrailerMismatch)
        }
    }

    /// The free page ids the freelist page lists (none when the meta has no freelist).
    pub fn free_pages(&mut self) -> Result<Vec<u64>, Error> {
        if self.meta.freelist == super::NO_FREELIST {
            return Ok(Vec::new());
        }
        let page = self.meta.freelist;
        let (header, node) = self.read_node(page)?;
        if header.flags != FREELIST_PAGE_FLAG {
            return Err(corrupt(
                page,
                format!("flags {:#06x}, not a freelist", header.flags),
            ));
        }
        let (first, count) = if header.count == FREELIST_COUNT_OVERFLOW {
            if node.len() < PAGE_HEADER_SIZE + 8 {
                return Err(corrupt(page, "no room for the freelist count"));
            }
            (1, u64_at(&node, PAGE_HEADER_SIZE))
        } else {
            (0, u64::from(header.count))
        };
        let room = ((node.len() - PAGE_HEADER_SIZE) / 8) as u64 - first;
        if count > room {
            return Err(corrupt(
                page,
                format!("freelist count {count}, room for {room}"),
            ));
        }
        // `count <= room`, and room counts u64s of a node already in memory.
        let ids = (0..count as usize)
            .map(|index| u64_at(&node, PAGE_HEADER_SIZE + (first as usize + index) * 8))
            .collect();
        Ok(ids)
    }

    /// The top-level buckets, in name order.
    pub fn buckets(&mut self) -> Result<Vec<Bucket>, Error> {
        let root = Bucket {
            name: Vec::new(),
            sequence: self.meta.sequence,
            root: BucketRoot::Page(self.meta.root),
        };
        let mut buckets = Vec::new();
        for entry in self.entries(&root) {
            let entry = entry?;
            if !entry.nested_bucket {
                return Err(Error::CorruptBucket {
                    name: entry.key,
                    reason: "the root bucket holds a plain key".into(),
                });
            }
            buckets.push(Bucket::parse(&entry.key, &entry.value)?);
        }
        Ok(buckets)
    }

    /// The top-level bucket named `name`, if there is one.
    pub fn bucket(&mut self, name: &[u8]) -> Result<Option<Bucket>, Error> {
        Ok(self
            .buckets()?
            .into_iter()
            .find(|bucket| bucket.name == name))
    }

    /// The entries of `bucket`, in key order.
    pub fn entries<'r>(&'r mut self, bucket: &Bucket) -> Entries<'r, R> {
        let mut entries = Entries {
            reader: self,
            path: Vec::new(),
            visited: HashSet::new(),
            previous_key: None,
            done: false,
            pending_error: None,
        };
        match &bucket.root {
            BucketRoot::Page(page) => {
                if let Err(error) = entries.descend(*page) {
                    entries.pending_error = Some(error);
                }
            }
            BucketRoot::Inline(node) => {
                let header = PageHeader::parse(node);
                if header.flags != LEAF_PAGE_FLAG {
                    entries.pending_error = Some(Error::CorruptBucket {
                        name: bucket.name.clone(),
                        reason: format!("inline page flags {:#06x}, not a leaf", header.flags),
                    });
                } else {
                    entries.path.push(Frame {
                        page: 0,
                        header,
                        node: node.clone(),
                        next: 0,
                    });
                }
            }
        }
        entries
    }

    /// Reads the node at `page`: its header, and its bytes (page and overflow pages).
    fn read_node(&mut self, page: u64) -> Result<(PageHeader, Vec<u8>), Error> {
        let page_size = u64::from(self.meta.page_size);
        if page < 2 || page >= self.meta.high_water {
            return Err(corrupt(
                page,
                format!(
                    "page id outside 2..{} (the high-water mark)",
                    self.meta.high_water
                ),
            ));
        }
        // `page < high_water`, and `high_water * page_size <= data_len`: no overflow.
        let offset = page * page_size;
        let mut first = vec![0; self.meta.page_size as usize];
        self.source.seek(SeekFrom::Start(offset))?;
        self.source.read_exact(&mut first)?;
        let header = PageHeader::parse(&first);
        if header.id != page {
            return Err(corrupt(
                page,
                format!("the page says it is page {}", header.id),
            ));
        }
        let pages = 1 + u64::from(header.overflow);
        if page + pages > self.meta.high_water {
            return Err(corrupt(
                page,
                format!(
                    "overflow {} runs past the high-water mark {}",
                    header.overflow, self.meta.high_water
                ),
            ));
        }
        let bytes = pages * page_size;
        if bytes > self.node_bytes_max {
            return Err(Error::NodeTooLarge {
                page,
                bytes,
                limit: self.node_bytes_max,
            });
        }
        let mut node = first;
        if pages > 1 {
            // Bounded above by node_bytes_max and by the file's length.
            let total = usize::try_from(bytes).map_err(|_| Error::NodeTooLarge {
                page,
                bytes,
                limit: self.node_bytes_max,
            })?;
            node.resize(total, 0);
            self.source
                .read_exact(&mut node[self.meta.page_size as usize..])?;
        }
        Ok((header, node))
    }
}

/// Reads and validates the meta page at `offset`: `Ok(Err(reason))` when it is not a
/// valid meta, `Err` only on an I/O failure.
fn read_meta<R: Read + Seek>(
    source: &mut R,
    offset: u64,
    data_len: u64,
) -> Result<Result<Meta, String>, Error> {
    let mut page = [0; Meta::PAGE_BYTES];
    if offset.saturating_add(page.len() as u64) > data_len {
        return Ok(Err(format!(
            "the file ({data_len} bytes) ends before the meta at {offset}"
        )));
    }
    source.seek(SeekFrom::Start(offset))?;
    source.read_exact(&mut page)?;
    Ok(Meta::parse(&page))
}

/// A node on the path from a bucket's root to the current leaf.
struct Frame {
    /// The node's page id (0 for an inline bucket's page).
    page: u64,
    header: PageHeader,
    node: Vec<u8>,
    /// The index of the next element to visit.
    next: usize,
}

/// The entries of a bucket in key order, read a node at a time. After an error the
/// iterator ends.
pub struct Entries<'r, R> {
    reader: &'r mut Reader<R>,
    /// From the root down to the current leaf.
    path: Vec<Frame>,
    /// Every page entered so far: a page reached twice means the tree loops or shares a
    /// subtree, and refusing it bounds the work by the file's page count.
    visited: HashSet<u64>,
    /// Keys must rise strictly, in a bucket as in bbolt.
    previous_key: Option<Vec<u8>>,
    done: bool,
    pending_error: Option<Error>,
}

impl<R: Read + Seek> Entries<'_, R> {
    /// Enters the node at `page`, a child of the current path's last node.
    fn descend(&mut self, page: u64) -> Result<(), Error> {
        if self.path.len() >= TREE_DEPTH_MAX {
            return Err(corrupt(
                page,
                format!("the tree is deeper than {TREE_DEPTH_MAX}"),
            ));
        }
        if !self.visited.insert(page) {
            return Err(corrupt(page, "the page is reached twice in one tree"));
        }
        let (header, node) = self.reader.read_node(page)?;
        if header.flags != LEAF_PAGE_FLAG && header.flags != BRANCH_PAGE_FLAG {
            return Err(corrupt(
                page,
                format!("flags {:#06x}, not a branch or a leaf", header.flags),
            ));
        }
        if header.flags == BRANCH_PAGE_FLAG && header.count == 0 {
            return Err(corrupt(page, "a branch without children"));
        }
        self.path.push(Frame {
            page,
            header,
            node,
            next: 0,
        });
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Entry>, Error> {
        loop {
            let Some(frame) = self.path.last_mut() else {
                return Ok(None);
            };
            let index = frame.next;
            if index >= usize::from(frame.header.count) {
                self.path.pop();
                continue;
            }
            frame.next += 1;
            if frame.header.flags == BRANCH_PAGE_FLAG {
                let (_, child) = branch_element(&frame.node, index, frame.page)?;
                self.descend(child)?;
                continue;
            }
            let element = leaf_element(&frame.node, index, frame.page)?;
            if element.key.is_empty() {
                return Err(corrupt(
                    frame.page,
                    format!("leaf element {index} has an empty key"),
                ));
            }
            if let Some(previous) = &self.previous_key {
                if element.key <= previous.as_slice() {
                    return Err(corrupt(
                        frame.page,
                        format!("leaf element {index}: keys out of order"),
                    ));
                }
            }
            let entry = Entry {
                key: element.key.to_vec(),
                value: element.value.to_vec(),
                nested_bucket: element.flags & BUCKET_LEAF_FLAG != 0,
            };
            self.previous_key = Some(entry.key.clone());
            return Ok(Some(entry));
        }
    }
}

impl<R: Read + Seek> Iterator for Entries<'_, R> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(error) = self.pending_error.take() {
            self.done = true;
            return Some(Err(error));
        }
        match self.step() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}
