//! Segment files: their names, and reading one back with torn-tail detection.
//!
//! A segment is named `{sequence:016x}-{first_index:016x}.wal`. `first_index` is one past
//! the last entry index written before the segment was cut, so every entry of a segment is
//! below the `first_index` of the segment after it: that is what lets
//! [`Wal::release_to`](super::Wal::release_to) drop whole segments by name.

use std::path::Path;

use super::record::{decode, Frame, RecordType, HEADER_BYTES};
use super::WalError;
use crate::io::SECTOR_BYTES;

pub(super) const SEGMENT_SUFFIX: &str = ".wal";
pub(super) const TMP_SUFFIX: &str = ".tmp";
pub(super) const BROKEN_SUFFIX: &str = ".broken";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SegmentName {
    pub sequence: u64,
    pub first_index: u64,
}

impl SegmentName {
    pub fn file_name(&self) -> String {
        format!(
            "{:016x}-{:016x}{SEGMENT_SUFFIX}",
            self.sequence, self.first_index
        )
    }

    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
        let (sequence, first_index) = stem.split_once('-')?;
        if sequence.len() != 16 || first_index.len() != 16 {
            return None;
        }
        Some(Self {
            sequence: u64::from_str_radix(sequence, 16).ok()?,
            first_index: u64::from_str_radix(first_index, 16).ok()?,
        })
    }
}

/// How a segment's records ended.
#[derive(Debug)]
pub(super) struct ScanEnd {
    /// Where the valid records end: the next record goes here.
    pub end: usize,
    /// The CRC of the last valid record.
    pub crc: u32,
    /// For the last segment: the valid records are followed by a torn write, to be cut off
    /// at `end`; the reason, and where the non-zero damaged bytes end.
    pub torn: Option<(String, usize)>,
}

/// Walks the records of one segment's bytes, calling `visit` for each valid one (the
/// leading crc record included).
///
/// `previous_crc` is the CRC the previous segment ended with, if it was read. Damage in a
/// segment that is not the last is corruption. In the last segment, a bad record whose
/// bytes run into the end of the file or into zeroed space at a sector boundary is a torn
/// write (what an interrupted append leaves) and ends the scan; any other bad record is
/// corruption, since valid data after it shows the write completed.
/// The length of `bytes` without its trailing zeros. A preallocated segment is mostly
/// zeros, so the tail is skipped a block at a time (a loop the compiler vectorizes)
/// before the last block is searched byte by byte.
fn written_end(bytes: &[u8]) -> usize {
    const BLOCK: usize = 256;
    let mut end = bytes.len();
    while end >= BLOCK && bytes[end - BLOCK..end].iter().fold(0u8, |acc, b| acc | b) == 0 {
        end -= BLOCK;
    }
    bytes[..end]
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1)
}

pub(super) fn scan(
    file: &Path,
    bytes: &[u8],
    previous_crc: Option<u32>,
    is_last: bool,
    mut visit: impl FnMut(RecordType, &[u8], u64) -> Result<(), WalError>,
) -> Result<ScanEnd, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: file.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    // Everything from `written_end` on is zero.
    let written_end = written_end(bytes);

    // The crc record was synced with the segment before it got its name, so it is whole.
    let (mut crc, mut offset) = match decode(bytes, 0, None) {
        Frame::Record {
            record_type,
            payload,
            crc,
            next,
        } => {
            visit(record_type, payload, 0)?;
            (crc, next)
        }
        Frame::End => return Err(corrupt(0, "segment has no crc record".into())),
        Frame::Bad { reason, .. } => return Err(corrupt(0, reason)),
    };
    if let Some(expected) = previous_crc {
        let carried = carried_crc(bytes);
        if carried != expected {
            return Err(corrupt(
                0,
                format!(
                    "segment continues CRC {carried:#010x}, the previous segment ended with {expected:#010x}: records are missing"
                ),
            ));
        }
    }

    while offset < bytes.len() {
        match decode(bytes, offset, Some(crc)) {
            Frame::Record {
                record_type,
                payload,
                crc: record_crc,
                next,
            } => {
                visit(record_type, payload, offset as u64)?;
                crc = record_crc;
                offset = next;
            }
            Frame::End => {
                if written_end <= offset {
                    break;
                }
                let reason = "non-zero bytes after the end of the records".to_string();
                if !is_last {
                    return Err(corrupt(offset, reason));
                }
                return Ok(ScanEnd {
                    end: offset,
                    crc,
                    torn: Some((reason, written_end)),
                });
            }
            Frame::Bad {
                reason,
                claimed_end,
            } => {
                if is_last && looks_torn(bytes, offset, claimed_end) {
                    return Ok(ScanEnd {
                        end: offset,
                        crc,
                        torn: Some((reason, written_end.max(offset))),
                    });
                }
                return Err(corrupt(offset, reason));
            }
        }
    }
    Ok(ScanEnd {
        end: offset,
        crc,
        torn: None,
    })
}

/// The CRC the leading crc record of a segment carries (the segment was decoded already).
fn carried_crc(bytes: &[u8]) -> u32 {
    use prost::Message;
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    super::record::CrcRecord::decode(&bytes[HEADER_BYTES..HEADER_BYTES + len])
        .map_or(0, |record| record.previous_crc)
}

/// Whether the bad frame at `start` (claiming to end at `claimed_end`) looks like a torn
/// write: it runs past the end of the file, or from some sector boundary inside it the rest
/// of the frame (up to the next boundary) is zeros, which is what a lost sector of an
/// append reads as.
fn looks_torn(bytes: &[u8], start: usize, claimed_end: usize) -> bool {
    if claimed_end > bytes.len() {
        return true;
    }
    let sector = SECTOR_BYTES as usize;
    let mut boundary = start.next_multiple_of(sector);
    while boundary < claimed_end {
        let chunk_end = (boundary + sector).min(claimed_end);
        if bytes[boundary..chunk_end].iter().all(|byte| *byte == 0) {
            return true;
        }
        boundary += sector;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_end_is_the_last_nonzero_byte() {
        // Sizes around the block, with the last nonzero byte at every position near the
        // block edges (and none at all).
        for len in [0, 1, 255, 256, 257, 511, 512, 513, 1024, 4096 + 3] {
            assert_eq!(written_end(&vec![0; len]), 0, "all zeros, {len}");
            for last in 0..len {
                let mut bytes = vec![0u8; len];
                bytes[last] = 0x80;
                if last > 0 {
                    bytes[0] = 1;
                }
                assert_eq!(written_end(&bytes), last + 1, "len {len}, last {last}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_sort() {
        let name = SegmentName {
            sequence: 3,
            first_index: 0x1_0000,
        };
        assert_eq!(name.file_name(), "0000000000000003-0000000000010000.wal");
        assert_eq!(SegmentName::parse(&name.file_name()), Some(name));
        for bad in [
            "x.wal",
            "0-1.wal",
            "0000000000000003-0000000000010000.wal.tmp",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }
}
