//! The spill file: queue items that the database did not take at shutdown,
//! kept on disk until the next start. The format describes and checks
//! itself, so a damaged, truncated or foreign file is recognised, never
//! trusted:
//!
//! ```text
//! header  "MQSPILL\n" | version u32 | item count u32 | name length u32 | queue name | crc32 u32
//! item    "MQIT" | key length u32 | value length u32 | key | value | crc32 u32
//! ```
//!
//! Integers are little-endian; each crc32 covers the fields between the
//! tag and itself. Every length is checked against what is left of the
//! file before anything is read, so decoding allocates nothing beyond the
//! file's own size.

use std::fmt;

const MAGIC: &[u8; 8] = b"MQSPILL\n";
const ITEM_TAG: &[u8; 4] = b"MQIT";
const VERSION: u32 = 2;
/// Longest encoded queue name kept whole in a file name; longer ones are
/// cut and completed with a hash of the whole name.
const MAX_NAME_IN_PATH: usize = 160;

/// Bytes of a queue name written as they are in its file name; every
/// other byte is written `%XX`.
const KEPT_IN_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'_');

/// A file name for the queue's spill file, distinct for every queue name:
/// bytes outside `[A-Za-z0-9_]` are written as `%XX`.
pub fn file_name(queue: &[u8]) -> String {
    let mut enc = percent_encoding::percent_encode(queue, KEPT_IN_NAME).to_string();
    if enc.len() > MAX_NAME_IN_PATH {
        let mut cut = MAX_NAME_IN_PATH;
        while enc.as_bytes()[cut - 1] == b'%' || enc.as_bytes()[cut - 2] == b'%' {
            cut -= 1;
        }
        enc = format!("{}~{:016x}", &enc[..cut], fnv1a(queue));
    }
    format!("mqueue-{enc}.spill")
}

/// FNV-1a, kept by hand rather than swapped for crc32fast: a long queue
/// name's spill file name carries it, and a spill file written by the
/// previous release must still be found under its name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes a whole spill file for `queue` holding `items`.
pub fn encode<'a>(queue: &[u8], items: &[(&'a [u8], &'a [u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    let start = out.len();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    out.extend_from_slice(&(queue.len() as u32).to_le_bytes());
    out.extend_from_slice(queue);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    for &(k, v) in items {
        out.extend_from_slice(ITEM_TAG);
        let start = out.len();
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Why a file cannot be used at all.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    Empty,
    /// No spill-file magic: another program's file, or an older format.
    NotSpill,
    UnknownVersion(u32),
    /// The header is cut or fails its checksum.
    BadHeader,
    /// A valid file of another queue.
    OtherQueue(Vec<u8>),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Empty => write!(f, "the file is empty"),
            Unusable::NotSpill => write!(f, "not an mqueue spill file"),
            Unusable::UnknownVersion(v) => write!(f, "unknown spill file version {v}"),
            Unusable::BadHeader => write!(f, "the file header is damaged"),
            Unusable::OtherQueue(n) => write!(
                f,
                "the file belongs to queue {}",
                String::from_utf8_lossy(n)
            ),
        }
    }
}

/// The readable items of a spill file, in order, and how many of the
/// items its header announces could not be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub items: Vec<(&'a [u8], &'a [u8])>,
    pub unreadable: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes a spill file that must belong to `queue`.
pub fn decode<'a>(buf: &'a [u8], queue: &[u8]) -> Result<Decoded<'a>, Unusable> {
    if buf.is_empty() {
        return Err(Unusable::Empty);
    }
    let mut r = Reader { buf, pos: 0 };
    if r.take(MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(Unusable::NotSpill);
    }
    let start = r.pos;
    let version = r.u32().ok_or(Unusable::BadHeader)?;
    let count = r.u32().ok_or(Unusable::BadHeader)? as usize;
    let name_len = r.u32().ok_or(Unusable::BadHeader)?;
    let name = r.take(name_len as usize).ok_or(Unusable::BadHeader)?;
    let covered = &buf[start..r.pos];
    let crc = r.u32().ok_or(Unusable::BadHeader)?;
    if crc32fast::hash(covered) != crc {
        return Err(if version != VERSION {
            Unusable::UnknownVersion(version)
        } else {
            Unusable::BadHeader
        });
    }
    if version != VERSION {
        return Err(Unusable::UnknownVersion(version));
    }
    if name != queue {
        return Err(Unusable::OtherQueue(name.to_vec()));
    }
    let mut out = Decoded::default();
    while r.pos < buf.len() && out.items.len() < count {
        if let Some((k, v, next)) = item_at(buf, r.pos) {
            out.items.push((k, v));
            r.pos = next;
            continue;
        }
        // Damaged: go on at the next item that checks out.
        match next_item(buf, r.pos + 1) {
            Some(t) => r.pos = t,
            None => break,
        }
    }
    out.unreadable = count - out.items.len();
    Ok(out)
}

/// The item at `pos` if it is whole and its checksum holds: key, value and
/// the position after it.
fn item_at(buf: &[u8], pos: usize) -> Option<(&[u8], &[u8], usize)> {
    let mut r = Reader { buf, pos };
    if r.take(ITEM_TAG.len())? != ITEM_TAG {
        return None;
    }
    let start = r.pos;
    let kl = r.u32()? as usize;
    let vl = r.u32()? as usize;
    let key = r.take(kl)?;
    let val = r.take(vl)?;
    let covered = &buf[start..r.pos];
    let crc = r.u32()?;
    (crc32fast::hash(covered) == crc).then_some((key, val, r.pos))
}

/// The position of the first whole item at or after `from`.
fn next_item(buf: &[u8], from: usize) -> Option<usize> {
    let mut p = from;
    loop {
        let t = p + buf
            .get(p..)?
            .windows(ITEM_TAG.len())
            .position(|w| w == ITEM_TAG)?;
        if item_at(buf, t).is_some() {
            return Some(t);
        }
        p = t + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(
            b"q",
            &[
                (b"k1".as_slice(), b"v1".as_slice()),
                (b"", b""),
                (b"k3", b"MQIT inside a value"),
            ],
        )
    }

    #[test]
    fn round_trip() {
        let buf = sample();
        let d = decode(&buf, b"q").unwrap();
        assert_eq!(d.unreadable, 0);
        assert_eq!(d.items.len(), 3);
        assert_eq!(
            d.items[2],
            (b"k3".as_slice(), b"MQIT inside a value".as_slice())
        );
    }

    #[test]
    fn foreign_empty_and_other_queue() {
        assert_eq!(decode(b"", b"q"), Err(Unusable::Empty));
        assert_eq!(decode(b"hello world", b"q"), Err(Unusable::NotSpill));
        assert_eq!(
            decode(b"mqueue-spill 1\n2 2\nabcd\n", b"q"),
            Err(Unusable::NotSpill)
        );
        assert_eq!(
            decode(&sample(), b"p"),
            Err(Unusable::OtherQueue(b"q".to_vec()))
        );
    }

    #[test]
    fn huge_lengths_are_bounded_by_the_file() {
        let mut buf = encode(b"q", &[(b"k", b"v")]);
        buf.truncate(buf.len() - 18);
        buf.extend_from_slice(ITEM_TAG);
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        let d = decode(&buf, b"q").unwrap();
        assert_eq!((d.items.len(), d.unreadable), (0, 1));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_caught() {
        let buf = sample();
        let whole = decode(&buf, b"q").unwrap().items;
        for cut in 0..buf.len() {
            if let Ok(d) = decode(&buf[..cut], b"q") {
                // Only a prefix of the items, each intact.
                assert_eq!(d.items[..], whole[..d.items.len()], "cut {cut}");
                assert_eq!(d.items.len() + d.unreadable, whole.len(), "cut {cut}");
            }
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                if let Ok(d) = decode(&b, b"q") {
                    for it in &d.items {
                        assert!(whole.contains(it), "flip {byte}.{bit}");
                    }
                    assert_eq!(
                        d.items.len() + d.unreadable,
                        whole.len(),
                        "flip {byte}.{bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn names_map_to_distinct_files() {
        let names: [&[u8]; 7] = [b"d_", "dé".as_bytes(), b"d-", b"d.", b"d%5F", b"d/", b"D_"];
        let files: std::collections::HashSet<String> = names.iter().map(|n| file_name(n)).collect();
        assert_eq!(files.len(), names.len());
        assert_eq!(file_name("dé".as_bytes()), "mqueue-d%C3%A9.spill");
        for f in &files {
            assert!(!f.contains('/'));
        }
        let long = vec![0xffu8; 300];
        let f = file_name(&long);
        assert!(f.len() < 255, "{}", f.len());
        let mut other = long.clone();
        other[299] = 0xfe;
        assert_ne!(f, file_name(&other));
    }
}
