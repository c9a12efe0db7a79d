//! Record framing: how one record sits in a segment, and the payloads of the record kinds.
//!
//! ```text
//! offset  size  field
//!      0     4  payload length, u32 little endian
//!      4     4  bitwise NOT of the payload length (catches a damaged length)
//!      8     1  record type (1 crc, 2 metadata, 3 entry, 4 hard state, 5 snapshot marker)
//!      9     3  reserved, zero
//!     12     4  CRC32C, u32 little endian, seeded with the previous record's CRC, over
//!               bytes 0..12 and the payload
//!     16     n  payload: the record's protobuf encoding
//!   16+n   0-7  zero padding to a multiple of 8
//! ```
//!
//! A header of sixteen zero bytes cannot be a record (type 0 does not exist), so zeros mark
//! the end of the written part of a segment (preallocated space reads as zeros).

use prost::Message;

/// Bytes of a record header.
pub(super) const HEADER_BYTES: usize = 16;

/// The largest payload a record may carry. Well above any entry the server accepts
/// (requests are limited to a few MiB), far below what a damaged length could claim.
pub(super) const PAYLOAD_BYTES_MAX: usize = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecordType {
    /// First record of every segment: carries the CRC the previous segment ended with.
    Crc = 1,
    Metadata = 2,
    Entry = 3,
    HardState = 4,
    SnapshotMarker = 5,
}

impl RecordType {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Crc,
            2 => Self::Metadata,
            3 => Self::Entry,
            4 => Self::HardState,
            5 => Self::SnapshotMarker,
            _ => return None,
        })
    }
}

/// Payload of [`RecordType::Crc`].
#[derive(Clone, PartialEq, Message)]
pub(super) struct CrcRecord {
    #[prost(uint32, tag = "1")]
    pub previous_crc: u32,
}

/// Payload of [`RecordType::Metadata`].
#[derive(Clone, PartialEq, Message)]
pub(super) struct MetadataRecord {
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    #[prost(uint64, tag = "2")]
    pub cluster_id: u64,
}

/// Payload of [`RecordType::SnapshotMarker`].
#[derive(Clone, PartialEq, Message)]
pub(super) struct SnapshotMarkerRecord {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(uint64, tag = "2")]
    pub term: u64,
}

/// Bytes a frame of `payload_len` takes, padding included.
pub(super) fn frame_bytes(payload_len: usize) -> usize {
    (HEADER_BYTES + payload_len).next_multiple_of(8)
}

/// Appends the frame of `message` to `buf` and advances the CRC chain `crc`.
/// The caller has checked that the payload is at most [`PAYLOAD_BYTES_MAX`].
pub(super) fn encode(
    buf: &mut Vec<u8>,
    record_type: RecordType,
    message: &impl Message,
    crc: &mut u32,
) {
    let payload_len = message.encoded_len();
    assert!(
        payload_len <= PAYLOAD_BYTES_MAX,
        "record payload of {payload_len} bytes exceeds {PAYLOAD_BYTES_MAX}"
    );
    let start = buf.len();
    let len = payload_len as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&(!len).to_le_bytes());
    buf.extend_from_slice(&[record_type as u8, 0, 0, 0]);
    buf.extend_from_slice(&[0; 4]);
    message.encode_raw(buf);
    let record_crc = crc32c::crc32c_append(
        crc32c::crc32c_append(*crc, &buf[start..start + 12]),
        &buf[start + HEADER_BYTES..],
    );
    buf[start + 12..start + 16].copy_from_slice(&record_crc.to_le_bytes());
    buf.resize(start + frame_bytes(payload_len), 0);
    *crc = record_crc;
}

/// What sits at an offset of a segment.
#[derive(Debug)]
pub(super) enum Frame<'a> {
    /// A whole record whose CRC matches.
    Record {
        record_type: RecordType,
        payload: &'a [u8],
        crc: u32,
        /// Offset of the next frame.
        next: usize,
    },
    /// Zeros, or the end of the file: nothing more was written.
    End,
    /// Not a valid record. `claimed_end` is where the frame would end if its header is
    /// believed (or the end of the header if it is not).
    Bad { reason: String, claimed_end: usize },
}

/// Reads the frame at `offset` of `bytes`, checking its CRC against the chain value
/// `previous_crc`. With `previous_crc` `None` the frame must be a [`RecordType::Crc`]
/// record, which is checked against the CRC it carries.
pub(super) fn decode(bytes: &[u8], offset: usize, previous_crc: Option<u32>) -> Frame<'_> {
    let rest = &bytes[offset..];
    if rest.iter().take(HEADER_BYTES).all(|byte| *byte == 0) {
        // All zeros, or a zero start running into the end of the file.
        return Frame::End;
    }
    let header_end = offset + HEADER_BYTES;
    if rest.len() < HEADER_BYTES {
        return Frame::Bad {
            reason: "header cut short by the end of the file".into(),
            claimed_end: header_end,
        };
    }
    let word = |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
    let len = word(0);
    if word(4) != !len {
        return Frame::Bad {
            reason: format!("length {len} does not match its check {:#x}", word(4)),
            claimed_end: header_end,
        };
    }
    let Some(record_type) = RecordType::from_byte(rest[8]) else {
        return Frame::Bad {
            reason: format!("unknown record type {}", rest[8]),
            claimed_end: header_end,
        };
    };
    if rest[9..12] != [0, 0, 0] {
        return Frame::Bad {
            reason: "reserved header bytes are not zero".into(),
            claimed_end: header_end,
        };
    }
    let len = len as usize;
    if len > PAYLOAD_BYTES_MAX {
        return Frame::Bad {
            reason: format!("length {len} exceeds the limit {PAYLOAD_BYTES_MAX}"),
            claimed_end: header_end,
        };
    }
    let frame_end = offset + frame_bytes(len);
    if frame_end > bytes.len() {
        return Frame::Bad {
            reason: format!("record of {len} bytes cut short by the end of the file"),
            claimed_end: frame_end,
        };
    }
    let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
    let stored_crc = word(12);
    let seed = match previous_crc {
        Some(crc) => crc,
        None if record_type == RecordType::Crc => match CrcRecord::decode(payload) {
            Ok(record) => record.previous_crc,
            Err(error) => {
                return Frame::Bad {
                    reason: format!("undecodable crc record: {error}"),
                    claimed_end: frame_end,
                }
            }
        },
        None => {
            return Frame::Bad {
                reason: format!("segment starts with a {record_type:?} record, not a crc record"),
                claimed_end: frame_end,
            }
        }
    };
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(seed, &rest[..12]), payload);
    if crc != stored_crc {
        return Frame::Bad {
            reason: format!("CRC mismatch: stored {stored_crc:#010x}, computed {crc:#010x}"),
            claimed_end: frame_end,
        };
    }
    Frame::Record {
        record_type,
        payload,
        crc,
        next: frame_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Entry;

    fn entry(index: u64) -> Entry {
        Entry {
            entry_type: 0,
            term: 1,
            index,
            data: vec![0xab; index as usize].into(),
        }
    }

    #[test]
    fn frames_round_trip_and_chain() {
        let mut buf = Vec::new();
        let mut crc = 0x1234;
        encode(
            &mut buf,
            RecordType::Crc,
            &CrcRecord { previous_crc: crc },
            &mut crc,
        );
        for index in 0..10 {
            encode(&mut buf, RecordType::Entry, &entry(index), &mut crc);
            assert_eq!(buf.len() % 8, 0);
        }
        let mut offset = 0;
        let mut chain = None;
        let mut seen = 0;
        loop {
            match decode(&buf, offset, chain) {
                Frame::Record {
                    record_type,
                    payload,
                    crc: record_crc,
                    next,
                } => {
                    if record_type == RecordType::Entry {
                        assert_eq!(Entry::decode(payload).expect("decode"), entry(seen));
                        seen += 1;
                    }
                    chain = Some(record_crc);
                    offset = next;
                }
                Frame::End => break,
                Frame::Bad { reason, .. } => panic!("bad frame at {offset}: {reason}"),
            }
            if offset == buf.len() {
                break;
            }
        }
        assert_eq!(seen, 10);
        assert_eq!(chain, Some(crc));
        // A wrong seed breaks the chain at the first record after the crc record.
        let Frame::Record { next, .. } = decode(&buf, 0, None) else {
            panic!("crc record")
        };
        assert!(matches!(decode(&buf, next, Some(1)), Frame::Bad { .. }));
    }

    #[test]
    fn damage_is_reported() {
        let mut buf = Vec::new();
        let mut crc = 0;
        encode(&mut buf, RecordType::Entry, &entry(40), &mut crc);
        let good = buf.clone();
        for (at, mask) in [(0, 1u8), (5, 0x80), (8, 0x10), (10, 1), (13, 4), (30, 2)] {
            let mut damaged = good.clone();
            damaged[at] ^= mask;
            assert!(
                matches!(decode(&damaged, 0, Some(0)), Frame::Bad { .. }),
                "byte {at}"
            );
        }
        assert!(matches!(decode(&good[..20], 0, Some(0)), Frame::Bad { .. }));
        assert!(matches!(decode(&[0; 16], 0, Some(0)), Frame::End));
        assert!(matches!(decode(&[0; 5], 0, Some(0)), Frame::End));
    }
}
