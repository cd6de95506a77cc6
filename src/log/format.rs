//! The on-disk format of a durable queue's segment files.
//!
//! A segment starts with a 40-byte header: magic `MQLOG\0\r\n`, format
//! version (u32), flags (u32, [`SNAPSHOT`], [`SIZED`]), the segment number
//! (u64), a random salt (u64), a CRC-32 of the header but these 4 bytes,
//! and the segment's length in 4,096-byte pages (u32; with [`SIZED`], else
//! 0): segments are created at full size, so a shorter file was cut.
//! Records follow, each 8-byte aligned:
//!
//! ```text
//! u32 body length | u32 CRC-32 (salt, length, body) | body | 0-7 pad
//! body: u8 kind, u64 sequence number, then for ADD and CLEAR: u32 key
//!       length, key, value (CLEAR: no key; the value lists the sequence
//!       numbers leased at the clear, u64 each, which it keeps)
//! ```
//!
//! Seeding the checksum with the segment's random salt means a record of
//! another segment (or a record image inside a queued value) never checks
//! out. Bytes that are zero
//! to the end of the file are unused space; anything else that does not
//! check out is damage, and the decoder looks for the next record that does
//! (every 8-byte boundary is tried).

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"MQLOG\0\r\n";
/// Format version written and the only one read.
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 40;
/// Header flag: the segment starts with a full copy of the queue (written at
/// start-up) and replaces every segment with a smaller number once its
/// [`Kind::SnapshotEnd`] record is on disk.
pub const SNAPSHOT: u32 = 1;
/// Header flag: the header records the segment's length (`pages`).
pub const SIZED: u32 = 2;
const REC_HEAD: usize = 8;
/// Largest body the decoder accepts (a sanity bound against garbage).
pub const MAX_BODY: usize = 1 << 30;

/// Record kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An item was queued.
    Add = 1,
    /// The item was fetched and leased to a process.
    Lease = 2,
    /// The item is gone for good (acknowledged, or an add rolled back).
    Ack = 3,
    /// `mqueue.clear`: every item up to this sequence number is gone, but
    /// for those leased at the time (listed in the record, so the record
    /// stands on its own even if lease records before it were lost).
    Clear = 4,
    /// The snapshot that starts this segment is complete.
    SnapshotEnd = 5,
}

impl Kind {
    fn has_payload(self) -> bool {
        matches!(self, Kind::Add | Kind::Clear)
    }

    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Add,
            2 => Kind::Lease,
            3 => Kind::Ack,
            4 => Kind::Clear,
            5 => Kind::SnapshotEnd,
            _ => return None,
        })
    }
}

/// A decoded record, borrowing from the segment bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    pub seq: u64,
    pub key: &'a [u8],
    pub val: &'a [u8],
}

/// A segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub flags: u32,
    pub segment: u64,
    /// Seeds every record's checksum.
    pub salt: u64,
    /// The length the segment was created with, in 4,096-byte pages (0:
    /// not recorded).
    pub pages: u32,
}

fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Bytes a record takes in the file.
pub fn record_len(kind: Kind, key_len: usize, val_len: usize) -> usize {
    let body = 9 + if kind.has_payload() {
        4 + key_len + val_len
    } else {
        0
    };
    REC_HEAD + pad8(body)
}

fn crc(salt: u64, len: u32, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// The header's checksum: every byte but the checksum's own.
fn header_crc(h: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&h[..32]);
    c.update(&h[36..HEADER_LEN]);
    c.finalize()
}

pub fn encode_header(h: Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    let flags = if h.pages != 0 {
        h.flags | SIZED
    } else {
        h.flags
    };
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&flags.to_le_bytes());
    out[16..24].copy_from_slice(&h.segment.to_le_bytes());
    out[24..32].copy_from_slice(&h.salt.to_le_bytes());
    out[36..40].copy_from_slice(&h.pages.to_le_bytes());
    let c = if flags & SIZED != 0 {
        header_crc(&out)
    } else {
        crc32fast::hash(&out[..32])
    };
    out[32..36].copy_from_slice(&c.to_le_bytes());
    out
}

/// Why a file is not a segment of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    Short,
    Magic,
    Version(u32),
    Checksum,
    /// The header names another segment than the file name.
    Segment(u64),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => write!(f, "shorter than a segment header"),
            HeaderError::Magic => write!(f, "not an mqueue log segment (bad magic)"),
            HeaderError::Version(v) => {
                write!(f, "log format version {v}, this module reads {VERSION}")
            }
            HeaderError::Checksum => write!(f, "segment header checksum mismatch"),
            HeaderError::Segment(n) => write!(f, "header names segment {n}, not the file's"),
        }
    }
}

pub fn decode_header(data: &[u8], segment: u64) -> Result<Header, HeaderError> {
    let h = data.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
    if h[..8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    let word = |a: usize| u32::from_le_bytes([h[a], h[a + 1], h[a + 2], h[a + 3]]);
    if word(8) != VERSION {
        return Err(HeaderError::Version(word(8)));
    }
    // Headers without a recorded length: the checksum covers 32 bytes.
    let sized = word(12) & SIZED != 0;
    let sum = if sized {
        header_crc(h)
    } else {
        crc32fast::hash(&h[..32])
    };
    if word(32) != sum {
        return Err(HeaderError::Checksum);
    }
    let long = |a: usize| {
        let mut n = [0u8; 8];
        n.copy_from_slice(&h[a..a + 8]);
        u64::from_le_bytes(n)
    };
    if long(16) != segment {
        return Err(HeaderError::Segment(long(16)));
    }
    Ok(Header {
        flags: word(12) & !SIZED,
        segment,
        salt: long(24),
        pages: if sized { word(36) } else { 0 },
    })
}

/// A random salt for a new segment.
pub fn new_salt() -> u64 {
    crate::queue::random_u64()
}

/// Writes a record into `out` (exactly [`record_len`] bytes).
pub fn encode_record(out: &mut [u8], salt: u64, kind: Kind, seq: u64, key: &[u8], val: &[u8]) {
    let total = record_len(kind, key.len(), val.len());
    debug_assert_eq!(out.len(), total);
    let body_len = if kind.has_payload() {
        13 + key.len() + val.len()
    } else {
        9
    };
    {
        let body = &mut out[REC_HEAD..];
        body[0] = kind as u8;
        body[1..9].copy_from_slice(&seq.to_le_bytes());
        if kind.has_payload() {
            body[9..13].copy_from_slice(&(key.len() as u32).to_le_bytes());
            body[13..13 + key.len()].copy_from_slice(key);
            body[13 + key.len()..body_len].copy_from_slice(val);
        }
        body[body_len..].fill(0);
    }
    let c = crc(salt, body_len as u32, &out[REC_HEAD..REC_HEAD + body_len]);
    out[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&c.to_le_bytes());
}

/// Appends a record to a vector.
pub fn push_record(out: &mut Vec<u8>, salt: u64, kind: Kind, seq: u64, key: &[u8], val: &[u8]) {
    let at = out.len();
    out.resize(at + record_len(kind, key.len(), val.len()), 0);
    encode_record(&mut out[at..], salt, kind, seq, key, val);
}

fn parse_body(body: &[u8]) -> Option<Record<'_>> {
    let kind = Kind::from_u8(*body.first()?)?;
    let mut s = [0u8; 8];
    s.copy_from_slice(body.get(1..9)?);
    let seq = u64::from_le_bytes(s);
    let (key, val): (&[u8], &[u8]) = if kind.has_payload() {
        let kl = body.get(9..13)?;
        let kl = u32::from_le_bytes([kl[0], kl[1], kl[2], kl[3]]) as usize;
        let rest = body.get(13..)?;
        if kl > rest.len() {
            return None;
        }
        rest.split_at(kl)
    } else {
        if body.len() != 9 {
            return None;
        }
        (&[], &[])
    };
    Some(Record {
        kind,
        seq,
        key,
        val,
    })
}

/// What a scan of one segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Bytes that did not decode (damage), not counting unused zeros.
    pub damaged_bytes: usize,
    /// Where the damaged stretches start.
    pub damage_at: Vec<usize>,
    /// Offset just past the last good record.
    pub end: usize,
}

/// Decodes the records of a segment (the bytes after the header), calling
/// `f` for each record that checks out, in file order. Never panics, never
/// reads outside `data`.
pub fn scan<'a>(data: &'a [u8], salt: u64, mut f: impl FnMut(Record<'a>)) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0usize;
    let mut bad_from: Option<usize> = None;
    while pos + REC_HEAD <= data.len() {
        let word = |a: usize| u32::from_le_bytes([data[a], data[a + 1], data[a + 2], data[a + 3]]);
        let len = word(pos) as usize;
        let sum = word(pos + 4);
        let rec = if (9..=MAX_BODY).contains(&len) && pos + REC_HEAD + pad8(len) <= data.len() {
            let body = &data[pos + REC_HEAD..pos + REC_HEAD + len];
            if crc(salt, len as u32, body) == sum {
                parse_body(body)
            } else {
                None
            }
        } else {
            None
        };
        match rec {
            Some(r) => {
                if let Some(from) = bad_from.take() {
                    out.damaged_bytes += pos - from;
                    out.damage_at.push(from);
                }
                f(r);
                pos += REC_HEAD + pad8(len);
                out.end = pos;
            }
            None => {
                if bad_from.is_none() {
                    if data[pos..].iter().all(|&b| b == 0) {
                        break;
                    }
                    bad_from = Some(pos);
                }
                pos += 8;
            }
        }
    }
    if bad_from.is_none() && pos < data.len() && data[pos..].iter().any(|&b| b != 0) {
        bad_from = Some(pos);
    }
    if let Some(from) = bad_from {
        // Damage up to the end: count it up to the last non-zero byte.
        let last = data.iter().rposition(|&b| b != 0).map_or(from, |p| p + 1);
        out.damaged_bytes += last.saturating_sub(from).max(1);
        out.damage_at.push(from);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(records: &[(Kind, u64, &[u8], &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(k, s, key, val) in records {
            push_record(&mut v, 7, k, s, key, val);
        }
        v
    }

    type Owned = (Kind, u64, Vec<u8>, Vec<u8>);

    fn all(data: &[u8]) -> (Vec<Owned>, Scan) {
        let mut out = Vec::new();
        let s = scan(data, 7, |r| {
            out.push((r.kind, r.seq, r.key.to_vec(), r.val.to_vec()))
        });
        (out, s)
    }

    #[test]
    fn round_trip_and_zero_tail() {
        let mut d = seg(&[
            (Kind::Add, 1, b"k", b"value"),
            (Kind::Lease, 1, b"", b""),
            (Kind::Ack, 1, b"", b""),
        ]);
        d.extend_from_slice(&[0u8; 100]);
        let (r, s) = all(&d);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], (Kind::Add, 1, b"k".to_vec(), b"value".to_vec()));
        assert_eq!(s.damaged_bytes, 0);
    }

    #[test]
    fn finds_records_after_a_bit_flip() {
        let mut d = seg(&[
            (Kind::Add, 1, b"a", b"1"),
            (Kind::Add, 2, b"b", b"2"),
            (Kind::Add, 3, b"c", b"3"),
        ]);
        let second = record_len(Kind::Add, 1, 1);
        d[second + 10] ^= 4;
        let (r, s) = all(&d);
        assert_eq!(r.iter().map(|x| x.1).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.damage_at, vec![second]);
    }

    #[test]
    fn other_salts_never_check_out() {
        let d = seg(&[(Kind::Add, 1, b"a", b"1")]);
        let mut n = 0;
        scan(&d, 8, |_| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn torn_tail_is_damage() {
        let d = seg(&[
            (Kind::Add, 1, b"a", b"1"),
            (Kind::Add, 2, b"b", &[9u8; 600]),
        ]);
        let (r, s) = all(&d[..d.len() - 40]);
        assert_eq!(r.len(), 1);
        assert!(s.damaged_bytes > 0);
    }

    #[test]
    fn header_checks() {
        let h = encode_header(Header {
            flags: SNAPSHOT,
            segment: 5,
            salt: 9,
            pages: 3,
        });
        assert_eq!(
            decode_header(&h, 5),
            Ok(Header {
                flags: SNAPSHOT,
                segment: 5,
                salt: 9,
                pages: 3,
            })
        );
        // The recorded length is covered by the checksum.
        let mut v = h;
        v[36] ^= 1;
        assert_eq!(decode_header(&v, 5), Err(HeaderError::Checksum));
        assert_eq!(decode_header(&h, 6), Err(HeaderError::Segment(5)));
        let mut v = h;
        v[8] = 2;
        assert!(matches!(decode_header(&v, 5), Err(HeaderError::Version(_))));
        assert_eq!(decode_header(b"hello", 5), Err(HeaderError::Short));
    }
}
