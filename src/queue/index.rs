//! Key index for unique-key queues: a chained hash table whose chains run
//! through the entries themselves (`Entry::bucket_next`), so indexing costs
//! no allocation per item. Only live entries are in it.

use std::ptr;

use super::log::Entry;
use super::{step, RawAlloc};

/// Buckets of a new table (doubled as keys arrive): small, so that a
/// queue holding a few items holds little shared memory.
const MIN_BUCKETS: usize = 8;

pub struct Index<A: RawAlloc> {
    alloc: A,
    buckets: *mut *mut Entry,
    /// Always a power of two, or 0 before the first insert.
    len: usize,
    count: u32,
    /// An insert since the last [`Index::age`]: an empty queue's table
    /// is kept for the next refill until a timer tick finds it unused.
    fresh: bool,
}

/// A keyed hash of the key bytes (SipHash-2-4 over the seed and the key), so
/// keys taken from SIP traffic cannot be chosen to collide.
pub fn hash_key(seed: u64, key: &[u8]) -> u32 {
    use std::hash::Hasher;
    let mut h =
        siphasher::sip::SipHasher24::new_with_keys(seed, seed.rotate_left(32) ^ 0x6d71_7565_7565);
    h.write(key);
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

impl<A: RawAlloc> Index<A> {
    pub const fn new(alloc: A) -> Self {
        Index {
            alloc,
            buckets: ptr::null_mut(),
            len: 0,
            count: 0,
            fresh: false,
        }
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Bytes the bucket array holds.
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<*mut Entry>()
    }

    fn slot(&self, hash: u32) -> *mut *mut Entry {
        // SAFETY: callers check len > 0; the mask keeps the offset in bounds.
        unsafe { self.buckets.add(hash as usize & (self.len - 1)) }
    }

    /// The live entry with this key, if any.
    pub fn find(&self, hash: u32, key: &[u8]) -> Option<*mut Entry> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: the chain holds live entries of the log (see module doc).
        unsafe {
            let mut e = *self.slot(hash);
            while !e.is_null() {
                if (*e).hash == hash && (*e).key() == key {
                    return Some(e);
                }
                e = (*e).bucket_next;
            }
        }
        None
    }

    /// Grows the table ahead of an insert; false when out of memory.
    pub fn reserve_one(&mut self) -> bool {
        if (self.count as usize) < self.len {
            return true;
        }
        let new_len = (self.len * 2).max(MIN_BUCKETS);
        let size = new_len * std::mem::size_of::<*mut Entry>();
        let table = self.alloc.alloc(size) as *mut *mut Entry;
        if table.is_null() {
            // A full table still works, with longer chains.
            return self.len > 0;
        }
        // SAFETY: the new table has new_len slots; old chains hold live entries.
        unsafe {
            ptr::write_bytes(table, 0, new_len);
            for i in 0..self.len {
                let mut e = *self.buckets.add(i);
                while !e.is_null() {
                    let next = (*e).bucket_next;
                    let slot = table.add((*e).hash as usize & (new_len - 1));
                    (*e).bucket_next = *slot;
                    *slot = e;
                    e = next;
                }
            }
        }
        // The old table is freed only once nothing points to it; a table
        // left half-moved by a dying process is rebuilt (`clear` + inserts).
        let old = self.buckets;
        self.buckets = table;
        self.len = new_len;
        step();
        if !old.is_null() {
            // SAFETY: the old table came from this allocator, freed once.
            unsafe { self.alloc.free(old as *mut u8) };
        }
        true
    }

    /// Adds a live entry; [`Index::reserve_one`] must have succeeded.
    pub fn insert(&mut self, entry: *mut Entry) {
        // SAFETY: reserve_one left len > 0; entry is a live log entry.
        unsafe {
            let slot = self.slot((*entry).hash);
            (*entry).bucket_next = *slot;
            *slot = entry;
        }
        self.count += 1;
        self.fresh = true;
    }

    /// Removes an entry that is in the index.
    pub fn remove(&mut self, entry: *mut Entry) {
        // SAFETY: entry is in the chain of its hash's slot.
        unsafe {
            let mut link = self.slot((*entry).hash);
            while !(*link).is_null() {
                if *link == entry {
                    *link = (*entry).bucket_next;
                    self.count = self.count.saturating_sub(1);
                    return;
                }
                link = &mut (**link).bucket_next;
            }
        }
        debug_assert!(false, "entry not in the index");
    }

    /// Forgets every entry (the log is rewritten, or rebuilt after a
    /// crash): follows no chain, so a half-updated table is no danger.
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: the table has len slots.
            unsafe { ptr::write_bytes(self.buckets, 0, self.len) };
        }
        self.count = 0;
    }

    /// Gives the table back if it is empty and no insert used it since the
    /// last call (a timer calls this every second).
    pub fn age(&mut self) {
        if self.count == 0 && !std::mem::take(&mut self.fresh) {
            self.release();
        }
    }

    /// Forgets every entry and gives the table back (the queue is empty).
    pub fn release(&mut self) {
        let old = self.buckets;
        self.buckets = ptr::null_mut();
        self.len = 0;
        self.count = 0;
        step();
        if !old.is_null() {
            // SAFETY: the table came from this allocator and is freed once.
            unsafe { self.alloc.free(old as *mut u8) };
        }
    }
}

impl<A: RawAlloc> Drop for Index<A> {
    fn drop(&mut self) {
        self.release();
    }
}
