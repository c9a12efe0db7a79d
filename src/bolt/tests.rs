//! Round trips through the writer and the reader, and the reader against damaged files.

use std::collections::BTreeMap;
use std::io::Cursor;

use proptest::prelude::*;

use super::*;

type Buckets = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A bbolt image of `buckets` with pages of `page_size`.
fn write(buckets: &Buckets, page_size: u32) -> Vec<u8> {
    let mut writer = Writer::new(Cursor::new(Vec::new()), page_size).unwrap();
    for (name, entries) in buckets {
        writer.begin_bucket(name).unwrap();
        for (key, value) in entries {
            writer.put(key, value).unwrap();
        }
    }
    writer.finish().unwrap().into_inner()
}

/// Every bucket of `image` and its entries.
fn read(image: &[u8]) -> Result<Buckets, Error> {
    let mut reader = Reader::new(Cursor::new(image))?;
    let mut buckets = Buckets::new();
    for bucket in reader.buckets()? {
        let mut entries = BTreeMap::new();
        for entry in reader.entries(&bucket) {
            let entry = entry?;
            assert!(!entry.nested_bucket, "the writer nests no buckets");
            entries.insert(entry.key, entry.value);
        }
        buckets.insert(bucket.name, entries);
    }
    Ok(buckets)
}

fn round_trip(buckets: &Buckets, page_size: u32) {
    let image = write(buckets, page_size);
    assert_eq!(image.len() % page_size as usize, 0);
    assert_eq!(&read(&image).unwrap(), buckets);
}

/// One bucket named `name` with `count` entries made by `entry`.
fn bucket(name: &str, count: usize, entry: impl Fn(usize) -> (Vec<u8>, Vec<u8>)) -> Buckets {
    let mut buckets = Buckets::new();
    buckets.insert(name.as_bytes().to_vec(), (0..count).map(entry).collect());
    buckets
}

/// An etcd-like revision key: 8-byte big-endian main revision, '_', sub revision.
fn revision(main: usize) -> Vec<u8> {
    let mut key = (main as u64).to_be_bytes().to_vec();
    key.push(b'_');
    key.extend_from_slice(&0u64.to_be_bytes());
    key
}

fn page(image: &mut [u8], page_size: u32, id: u64) -> &mut [u8] {
    let start = id as usize * page_size as usize;
    &mut image[start..start + page_size as usize]
}

fn header(image: &[u8], page_size: u32, id: u64) -> PageHeader {
    PageHeader::parse(&image[id as usize * page_size as usize..])
}

/// The root page of bucket `name` in `image`.
fn bucket_root(image: &[u8], name: &[u8]) -> u64 {
    let mut reader = Reader::new(Cursor::new(image)).unwrap();
    let bucket = reader.bucket(name).unwrap().expect("the bucket exists");
    bucket.root_page().expect("not inline")
}

/// Rewrites both metas of `image` with `change` applied, checksums recomputed.
fn rewrite_metas(image: &mut [u8], page_size: u32, change: impl Fn(&mut Meta)) {
    for id in 0..2 {
        let page = page(image, page_size, id);
        let mut meta = Meta::parse(page).unwrap();
        change(&mut meta);
        meta.encode(id, page);
    }
}

/// Reads every entry of every bucket, returning the first error.
fn read_everything(image: &[u8]) -> Result<usize, Error> {
    let mut reader = Reader::new(Cursor::new(image))?;
    let _ = reader.free_pages();
    let _ = reader.verify_trailer();
    let mut count = 0;
    for bucket in reader.buckets()? {
        for entry in reader.entries(&bucket) {
            entry?;
            count += 1;
        }
    }
    Ok(count)
}

fn expect_corrupt(image: &[u8]) {
    match read_everything(image) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("expected a corrupt page, got {other:?}"),
    }
}

/// A two-level-or-deeper tree: bucket "key" of 3000 revisions at 512-byte pages.
fn deep_image() -> (Vec<u8>, Buckets) {
    let buckets = bucket("key", 3000, |i| (revision(i + 1), vec![b'v'; 40]));
    (write(&buckets, 512), buckets)
}

#[test]
fn round_trips() {
    let empty = Buckets::new();
    let mut empty_bucket = Buckets::new();
    empty_bucket.insert(b"empty".to_vec(), BTreeMap::new());
    let cases: Vec<(&str, Buckets, u32)> = vec![
        ("no buckets", empty, 4096),
        ("an empty bucket", empty_bucket, 4096),
        (
            "one key",
            bucket("b", 1, |_| (b"k".to_vec(), b"v".to_vec())),
            4096,
        ),
        (
            "an empty value",
            bucket("b", 3, |i| (vec![b'a' + i as u8], Vec::new())),
            4096,
        ),
        (
            "many keys, several branch levels",
            bucket("key", 20_000, |i| {
                (revision(i), format!("value {i}").into_bytes())
            }),
            512,
        ),
        (
            "values larger than a page, between small ones",
            bucket("big", 12, |i| {
                let len = if i % 3 == 0 { 10_000 + i * 777 } else { 5 };
                (vec![b'k', i as u8], vec![i as u8; len])
            }),
            4096,
        ),
        (
            "a 1.5 MiB value",
            bucket("big", 3, |i| {
                (vec![b'k', i as u8], vec![7; 1_572_864 * (i % 2)])
            }),
            4096,
        ),
        (
            "keys of varied sizes, up to bbolt's maximum",
            bucket("keys", 40, |i| {
                let len = [1, 7, 300, 4000, KEY_BYTES_MAX][i % 5];
                let mut key = vec![i as u8; len];
                key[0] = i as u8;
                (key, vec![1; i])
            }),
            1024,
        ),
    ];
    for (name, buckets, page_size) in cases {
        println!("case: {name}");
        round_trip(&buckets, page_size);
    }
}

#[test]
fn many_buckets_make_a_deep_root_bucket() {
    let mut buckets = Buckets::new();
    for i in 0..3000 {
        let entries = (0..i % 4)
            .map(|j| (vec![b'k', j as u8], vec![b'v'; j]))
            .collect();
        buckets.insert(format!("bucket{i:05}").into_bytes(), entries);
    }
    let image = write(&buckets, 512);
    let reader = Reader::new(Cursor::new(&image)).unwrap();
    let root = header(&image, 512, reader.meta().root);
    assert_eq!(
        root.flags, BRANCH_PAGE_FLAG,
        "3000 buckets do not fit one page"
    );
    assert_eq!(read(&image).unwrap(), buckets);
}

#[test]
fn a_big_tree_has_branches_of_branches() {
    let (image, buckets) = deep_image();
    let root = bucket_root(&image, b"key");
    let root_header = header(&image, 512, root);
    assert_eq!(root_header.flags, BRANCH_PAGE_FLAG);
    let root_node = &image[root as usize * 512..(root as usize + 1) * 512];
    let (_, child) = branch_element(root_node, 0, root).unwrap();
    assert_eq!(header(&image, 512, child).flags, BRANCH_PAGE_FLAG);
    assert_eq!(read(&image).unwrap(), buckets);
}

#[test]
fn the_writer_lays_out_bbolt_metas() {
    let image = write(&bucket("b", 1, |_| (b"k".to_vec(), b"v".to_vec())), 4096);
    let meta0 = Meta::parse(&image[..4096]).unwrap();
    let meta1 = Meta::parse(&image[4096..]).unwrap();
    assert_eq!(header(&image, 4096, 0).id, 0);
    assert_eq!(header(&image, 4096, 1).id, 1);
    assert_eq!(header(&image, 4096, 0).flags, META_PAGE_FLAG);
    // bbolt writes meta `txid % 2`.
    assert_eq!(meta0.txid % 2, 0);
    assert_eq!(meta1.txid % 2, 1);
    assert_eq!(meta0.page_size, 4096);
    assert_eq!(meta0.high_water * 4096, image.len() as u64);
    assert_eq!(meta0.freelist, 2);
    assert_eq!(header(&image, 4096, 2).flags, FREELIST_PAGE_FLAG);
    let mut reader = Reader::new(Cursor::new(&image)).unwrap();
    assert_eq!(reader.meta(), &meta0);
    assert_eq!(reader.free_pages().unwrap(), Vec::<u64>::new());
}

#[test]
fn every_page_below_the_high_water_mark_is_used_once() {
    // bbolt's `Tx.Check` (run by `etcdctl snapshot status`) reports unreachable pages.
    let (image, _) = deep_image();
    let reader = Reader::new(Cursor::new(&image)).unwrap();
    let mut used = vec![0u32; reader.meta().high_water as usize];
    used[0] += 1;
    used[1] += 1;
    used[2] += 1;
    let mut pending = vec![reader.meta().root];
    while let Some(id) = pending.pop() {
        let header = header(&image, 512, id);
        for page in id..=id + u64::from(header.overflow) {
            used[page as usize] += 1;
        }
        let node = &image[id as usize * 512..(id as usize + 1 + header.overflow as usize) * 512];
        for index in 0..usize::from(header.count) {
            if header.flags == BRANCH_PAGE_FLAG {
                pending.push(branch_element(node, index, id).unwrap().1);
            } else {
                let element = leaf_element(node, index, id).unwrap();
                if element.flags & BUCKET_LEAF_FLAG != 0 {
                    pending.push(u64_at(element.value, 0));
                }
            }
        }
    }
    assert!(used.iter().all(|&uses| uses == 1), "page uses: {used:?}");
}

/// A sink that keeps nothing but its length, for writing more than memory should hold.
#[derive(Default)]
struct Discard {
    position: u64,
    len: u64,
}

impl std::io::Write for Discard {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.position += bytes.len() as u64;
        self.len = self.len.max(self.position);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Discard {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.position = match to {
            std::io::SeekFrom::Start(position) => position,
            std::io::SeekFrom::End(offset) => self.len.saturating_add_signed(offset),
            std::io::SeekFrom::Current(offset) => self.position.saturating_add_signed(offset),
        };
        Ok(self.position)
    }
}

#[test]
fn the_writer_holds_one_node_per_level() {
    // 200,000 revisions of 256 bytes: 55 MB written, a node per tree level held.
    let mut writer = Writer::new(Discard::default(), 4096).unwrap();
    writer.begin_bucket(b"key").unwrap();
    let value = vec![b'v'; 256];
    let mut held_most = 0;
    for main in 0..200_000 {
        writer.put(&revision(main), &value).unwrap();
        held_most = held_most.max(writer.held_bytes());
    }
    // A leaf and at most three branch levels, each under a page.
    assert!(held_most <= 4 * 4096, "held {held_most} bytes");
    let sink = writer.finish().unwrap();
    assert!(sink.len > 200_000 * 256, "wrote {} bytes", sink.len);
}

#[test]
fn the_writer_refuses_bad_input() {
    let fresh = || {
        let mut writer = Writer::new(Cursor::new(Vec::new()), 4096).unwrap();
        writer.begin_bucket(b"m").unwrap();
        writer.put(b"k2", b"v").unwrap();
        writer
    };
    assert!(matches!(
        fresh().put(b"k1", b"v"),
        Err(Error::KeyOrder { .. })
    ));
    assert!(matches!(
        fresh().put(b"k2", b"v"),
        Err(Error::KeyOrder { .. })
    ));
    assert!(matches!(fresh().put(b"", b"v"), Err(Error::EmptyKey)));
    assert!(matches!(
        fresh().put(&vec![1; KEY_BYTES_MAX + 1], b"v"),
        Err(Error::KeyTooLarge(_))
    ));
    assert!(matches!(
        fresh().begin_bucket(b"a"),
        Err(Error::BucketOrder { .. })
    ));
    assert!(matches!(
        fresh().begin_bucket(b"m"),
        Err(Error::BucketOrder { .. })
    ));
    assert!(matches!(fresh().begin_bucket(b""), Err(Error::EmptyKey)));
    let mut writer = Writer::new(Cursor::new(Vec::new()), 4096).unwrap();
    assert!(matches!(writer.put(b"k", b"v"), Err(Error::NoBucket)));
    assert!(matches!(
        Writer::new(Cursor::new(Vec::new()), 1000),
        Err(Error::PageSize(1000))
    ));
    // Keys of a new bucket start over.
    let mut writer = fresh();
    writer.begin_bucket(b"n").unwrap();
    writer.put(b"a", b"v").unwrap();
}

#[test]
fn a_trailer_is_found_and_checked() {
    let buckets = bucket("b", 100, |i| (revision(i), vec![3; 100]));
    let mut file = Cursor::new(write(&buckets, 4096));
    let digest = append_trailer(&mut file).unwrap();
    let mut image = file.into_inner();
    assert_eq!(image.len() % 512, 32);
    let mut reader = Reader::new(Cursor::new(&image)).unwrap();
    assert_eq!(reader.trailer(), Some(&digest));
    assert_eq!(reader.data_len(), image.len() as u64 - 32);
    reader.verify_trailer().unwrap();
    assert_eq!(read(&image).unwrap(), buckets);

    let last_page = image.len() - 100;
    image[last_page] ^= 1;
    let mut reader = Reader::new(Cursor::new(&image)).unwrap();
    assert!(matches!(
        reader.verify_trailer(),
        Err(Error::TrailerMismatch)
    ));

    let image = write(&buckets, 4096);
    let mut reader = Reader::new(Cursor::new(&image)).unwrap();
    assert_eq!(reader.trailer(), None);
    assert!(matches!(reader.verify_trailer(), Err(Error::NoTrailer)));
}

#[test]
fn an_inline_bucket_is_read_from_its_entry() {
    // The writer writes no inline buckets, so this one is put together by hand: a root
    // leaf with one bucket entry whose value is {root 0, sequence 9} and a leaf page.
    let pairs: [(&[u8], &[u8]); 2] = [(b"alpha", b"1"), (b"beta", b"22")];
    let mut inline = vec![0; BUCKET_HEADER_SIZE];
    inline[8..16].copy_from_slice(&9u64.to_le_bytes());
    inline.extend_from_slice(&leaf_node(0, &pairs.map(|(k, v)| (0, k, v))));
    let mut image = write(&bucket("x", 0, |_| unreachable!()), 4096);
    let root = Reader::new(Cursor::new(&image)).unwrap().meta().root;
    let node = leaf_node(root, &[(BUCKET_LEAF_FLAG, b"inline", &inline)]);
    page(&mut image, 4096, root)[..node.len()].copy_from_slice(&node);

    let mut reader = Reader::new(Cursor::new(&image)).unwrap();
    let buckets = reader.buckets().unwrap();
    assert_eq!(buckets.len(), 1);
    assert!(buckets[0].is_inline());
    assert_eq!(buckets[0].sequence, 9);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = reader
        .entries(&buckets[0])
        .map(|entry| entry.map(|entry| (entry.key, entry.value)))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(entries, pairs.map(|(k, v)| (k.to_vec(), v.to_vec())));
}

/// A leaf node of `elements` (flags, key, value), encoded independently of the writer.
fn leaf_node(id: u64, elements: &[(u32, &[u8], &[u8])]) -> Vec<u8> {
    let mut node = Vec::new();
    node.extend_from_slice(&id.to_le_bytes());
    node.extend_from_slice(&LEAF_PAGE_FLAG.to_le_bytes());
    node.extend_from_slice(&(elements.len() as u16).to_le_bytes());
    node.extend_from_slice(&0u32.to_le_bytes());
    let mut data = Vec::new();
    for (index, (flags, key, value)) in elements.iter().enumerate() {
        let element_start = PAGE_HEADER_SIZE + index * LEAF_ELEMENT_SIZE;
        let data_start = PAGE_HEADER_SIZE + elements.len() * LEAF_ELEMENT_SIZE + data.len();
        node.extend_from_slice(&flags.to_le_bytes());
        node.extend_from_slice(&((data_start - element_start) as u32).to_le_bytes());
        node.extend_from_slice(&(key.len() as u32).to_le_bytes());
        node.extend_from_slice(&(value.len() as u32).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
    }
    node.extend_from_slice(&data);
    node
}

#[test]
fn the_freelist_count_overflow_convention() {
    let mut image = write(&bucket("b", 1, |_| (b"k".to_vec(), b"v".to_vec())), 4096);
    let freelist = page(&mut image, 4096, 2);
    freelist[10..12].copy_from_slice(&0xFFFFu16.to_le_bytes());
    freelist[16..24].copy_from_slice(&2u64.to_le_bytes());
    freelist[24..32].copy_from_slice(&70u64.to_le_bytes());
    freelist[32..40].copy_from_slice(&71u64.to_le_bytes());
    let mut reader = Reader::new(Cursor::new(&image)).unwrap();
    assert_eq!(reader.free_pages().unwrap(), vec![70, 71]);

    page(&mut image, 4096, 2)[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let mut reader = Reader::new(Cursor::new(&image)).unwrap();
    assert!(matches!(reader.free_pages(), Err(Error::Corrupt { .. })));
}

#[test]
fn one_bad_meta_falls_back_to_the_other() {
    let (image, buckets) = deep_image();
    for damage in [16, 20, 24, 40, 72] {
        // Magic, version, page size, root, checksum of meta 0.
        let mut damaged = image.clone();
        damaged[damage] ^= 0x40;
        let reader = Reader::new(Cursor::new(&damaged)).unwrap();
        assert_eq!(reader.meta().txid, 1, "damage at {damage}: meta 1 is taken");
        assert_eq!(read(&damaged).unwrap(), buckets);
    }
    // A damaged meta 1 leaves meta 0, the newer one, in charge anyway.
    let mut damaged = image.clone();
    damaged[512 + 16] ^= 1;
    assert_eq!(Reader::new(Cursor::new(&damaged)).unwrap().meta().txid, 2);
}

#[test]
fn two_bad_metas_are_refused() {
    // At 4096-byte pages, where a reader whose meta 0 is bad looks for meta 1, as bbolt.
    let image = write(&bucket("b", 30, |i| (revision(i), vec![1; 10])), 4096);
    for (offset, what) in [(16, "magic"), (20, "version"), (72, "checksum")] {
        let mut damaged = image.clone();
        damaged[offset] ^= 1;
        damaged[4096 + offset] ^= 1;
        match Reader::new(Cursor::new(&damaged)) {
            Err(Error::NoValidMeta { meta0, meta1 }) => {
                assert!(meta0.contains(what), "{meta0}");
                assert!(meta1.contains(what), "{meta1}");
            }
            other => panic!("damaged {what}: {:?}", other.map(|r| *r.meta())),
        }
    }
}

#[test]
fn truncated_files_are_refused() {
    let (image, _) = deep_image();
    for len in [0, 10, 100, 600, 2000, image.len() - 512, image.len() - 1] {
        match Reader::new(Cursor::new(&image[..len])) {
            Err(Error::Truncated { .. }) | Err(Error::NoValidMeta { .. }) => {}
            other => panic!("length {len}: {:?}", other.map(|r| *r.meta())),
        }
    }
}

#[test]
fn meta_page_ids_past_the_high_water_mark_are_refused() {
    let (image, _) = deep_image();
    let mut damaged = image.clone();
    rewrite_metas(&mut damaged, 512, |meta| meta.root = meta.high_water);
    assert!(matches!(
        Reader::new(Cursor::new(&damaged)),
        Err(Error::NoValidMeta { .. })
    ));
    let mut damaged = image.clone();
    rewrite_metas(&mut damaged, 512, |meta| {
        meta.freelist = meta.high_water + 7
    });
    assert!(matches!(
        Reader::new(Cursor::new(&damaged)),
        Err(Error::NoValidMeta { .. })
    ));
    // A high-water mark past the end of the file.
    let mut damaged = image.clone();
    rewrite_metas(&mut damaged, 512, |meta| meta.high_water += 1);
    assert!(matches!(
        Reader::new(Cursor::new(&damaged)),
        Err(Error::Truncated { .. })
    ));
    let mut damaged = image;
    rewrite_metas(&mut damaged, 512, |meta| meta.high_water = u64::MAX);
    assert!(matches!(
        Reader::new(Cursor::new(&damaged)),
        Err(Error::Truncated { .. })
    ));
}

/// Picks a child page from the root's page id and the high-water mark.
type ChildOf = fn(u64, u64) -> u64;

/// Changes the first branch element of bucket "key"'s root in `image` to point at
/// `child`.
fn point_root_branch_at(image: &mut [u8], child: impl Fn(u64, u64) -> u64) {
    let root = bucket_root(image, b"key");
    let high_water = Reader::new(Cursor::new(&*image)).unwrap().meta().high_water;
    let node = page(image, 512, root);
    let start = PAGE_HEADER_SIZE + 8;
    node[start..start + 8].copy_from_slice(&child(root, high_water).to_le_bytes());
}

#[test]
fn branches_pointing_astray_are_refused() {
    let (image, _) = deep_image();
    let cases: [(&str, ChildOf); 5] = [
        ("itself", |root, _| root),
        ("the high-water mark", |_, high_water| high_water),
        ("far past the file", |_, _| u64::MAX / 2),
        ("a meta page", |_, _| 0),
        ("the freelist page", |_, _| 2),
    ];
    for (what, child) in cases {
        println!("case: {what}");
        let mut damaged = image.clone();
        point_root_branch_at(&mut damaged, child);
        expect_corrupt(&damaged);
    }
    // Two branch elements leading to one page.
    let mut damaged = image.clone();
    let root = bucket_root(&damaged, b"key");
    let node = page(&mut damaged, 512, root);
    let second = u64_at(node, PAGE_HEADER_SIZE + BRANCH_ELEMENT_SIZE + 8);
    node[PAGE_HEADER_SIZE + 8..PAGE_HEADER_SIZE + 16].copy_from_slice(&second.to_le_bytes());
    expect_corrupt(&damaged);
}

/// The first leaf page of bucket "key" in `image` (512-byte pages).
fn first_leaf(image: &[u8]) -> u64 {
    let mut id = bucket_root(image, b"key");
    loop {
        let node = &image[id as usize * 512..(id as usize + 1) * 512];
        if PageHeader::parse(node).flags == LEAF_PAGE_FLAG {
            return id;
        }
        id = branch_element(node, 0, id).unwrap().1;
    }
}

#[test]
fn damaged_nodes_are_refused() {
    let (image, _) = deep_image();
    let leaf = first_leaf(&image);
    let root = bucket_root(&image, b"key");
    let cases: [(&str, u64, usize, &[u8]); 9] = [
        (
            "a leaf's count past its page",
            leaf,
            10,
            &0xFFFEu16.to_le_bytes(),
        ),
        (
            "a branch's count past its page",
            root,
            10,
            &0x2000u16.to_le_bytes(),
        ),
        (
            "a leaf element's pos past the page",
            leaf,
            16 + 4,
            &0xFFFF_FF00u32.to_le_bytes(),
        ),
        (
            "a leaf element's value past the page",
            leaf,
            16 + 12,
            &600u32.to_le_bytes(),
        ),
        (
            "a branch element's key past the page",
            root,
            16 + 4,
            &u32::MAX.to_le_bytes(),
        ),
        ("an absurd overflow", leaf, 12, &u32::MAX.to_le_bytes()),
        (
            "a leaf that says it is a freelist",
            leaf,
            8,
            &FREELIST_PAGE_FLAG.to_le_bytes(),
        ),
        (
            "a leaf that says it is another page",
            leaf,
            0,
            &(leaf + 1).to_le_bytes(),
        ),
        ("an empty key", leaf, 16 + 8, &0u32.to_le_bytes()),
    ];
    for (what, id, offset, bytes) in cases {
        println!("case: {what}");
        let mut damaged = image.clone();
        page(&mut damaged, 512, id)[offset..offset + bytes.len()].copy_from_slice(bytes);
        expect_corrupt(&damaged);
    }
}

#[test]
fn keys_out_of_order_are_refused() {
    let (mut image, _) = deep_image();
    let leaf = first_leaf(&image);
    // The first key's main revision, big-endian at the key's start, made the largest.
    let node = page(&mut image, 512, leaf);
    let element = leaf_element(node, 0, leaf).unwrap();
    let key_at = element.key.as_ptr() as usize - node.as_ptr() as usize;
    node[key_at] = 0xFF;
    expect_corrupt(&image);
}

#[test]
fn nodes_above_the_limit_are_refused() {
    let buckets = bucket("big", 1, |_| (b"k".to_vec(), vec![0; 100_000]));
    let image = write(&buckets, 4096);
    let mut reader = Reader::new(Cursor::new(&image))
        .unwrap()
        .with_node_bytes_max(64 * 1024);
    let bucket = reader.bucket(b"big").unwrap().unwrap();
    let result: Result<Vec<_>, _> = reader.entries(&bucket).collect();
    assert!(matches!(result, Err(Error::NodeTooLarge { .. })));
}

fn arbitrary_buckets() -> impl Strategy<Value = Buckets> {
    let key = proptest::collection::vec(any::<u8>(), 1..40);
    let value = proptest::collection::vec(any::<u8>(), 0..300);
    let entries = proptest::collection::btree_map(key, value, 0..200);
    let name = proptest::collection::vec(any::<u8>(), 1..10);
    proptest::collection::btree_map(name, entries, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_buckets_round_trip(buckets in arbitrary_buckets(), big in any::<bool>()) {
        let page_size = if big { 4096 } else { 512 };
        let image = write(&buckets, page_size);
        prop_assert_eq!(read(&image).unwrap(), buckets);
    }

    #[test]
    fn damaged_files_end_in_an_error_or_entries_never_a_panic(
        seed in 0u64..1_000_000,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..20),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let buckets = bucket("key", 300 + (seed % 300) as usize, |i| {
            (revision(i), vec![(seed % 251) as u8; i % 700])
        });
        let mut image = write(&buckets, 512);
        let intact = flips.is_empty() && !truncate;
        for (at, byte) in flips {
            let at = at.index(image.len());
            image[at] ^= byte;
        }
        if truncate {
            image.truncate(cut.index(image.len()));
        }
        // Whatever the damage, reading ends, in an error or with entries; an intact file
        // reads in full.
        let result = read_everything(&image);
        if intact {
            prop_assert_eq!(result.unwrap(), buckets[&b"key"[..]].len());
        }
    }
}
