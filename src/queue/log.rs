//! Item storage: entries packed one after another into a list of chunks.
//! The reader takes entries from the head chunk, the writer appends to the
//! tail chunk; a chunk is freed once the reader has passed it. Removing an
//! item from the middle (addmode 2) only marks its entry dead.

use std::ptr;

use super::RawAlloc;

/// Payload bytes of the largest ordinary chunk; larger entries get a chunk
/// of their own.
pub const CHUNK_PAYLOAD: usize = 16 * 1024 - CHUNK_HEADER;
/// Payload bytes of a queue's first chunk. Each new chunk doubles the last
/// one up to [`CHUNK_PAYLOAD`], so memory follows what the queue holds: a
/// queue with one small item holds one small chunk.
const FIRST_CHUNK_PAYLOAD: usize = 32;
/// A drained queue keeps its last chunk for reuse only up to this payload,
/// so an idle queue holds little shared memory.
const KEPT_CHUNK_PAYLOAD: usize = 256;
const CHUNK_HEADER: usize = std::mem::size_of::<Chunk>();
const ENTRY_HEADER: usize = std::mem::size_of::<Entry>();

#[repr(C)]
pub struct Chunk {
    next: *mut Chunk,
    /// Payload capacity in bytes.
    cap: usize,
    /// Bytes written so far.
    used: usize,
}

/// One item: this header, then the key bytes, then the value bytes.
#[repr(C)]
pub struct Entry {
    pub key_len: u32,
    pub val_len: u32,
    pub hash: u32,
    /// [`LIVE`], and [`TAGGED`] when a sequence number follows the value.
    pub flags: u32,
    /// Next entry in the same index bucket.
    pub bucket_next: *mut Entry,
}

/// The item is queued (not replaced).
pub const LIVE: u32 = 1;
/// A durable queue's item: its log sequence number (u64) follows the value,
/// so memory queues pay nothing for it.
pub const TAGGED: u32 = 2;

impl Entry {
    /// Bytes an item counts for (`maxbytes`, statistics): its header, key
    /// and value.
    pub fn size_for(key_len: usize, val_len: usize) -> usize {
        (ENTRY_HEADER + key_len + val_len + 7) & !7
    }

    pub fn size(&self) -> usize {
        Self::size_for(self.key_len as usize, self.val_len as usize)
    }

    /// Bytes the entry takes in its chunk (the size, and the tag if any).
    pub fn footprint(&self) -> usize {
        self.size() + if self.flags & TAGGED != 0 { 8 } else { 0 }
    }

    pub fn is_live(&self) -> bool {
        self.flags & LIVE != 0
    }

    pub fn kill(&mut self) {
        self.flags &= !LIVE;
    }

    /// The log sequence number (0 for a memory queue's item).
    ///
    /// # Safety
    /// As for [`Entry::key`].
    pub unsafe fn seq(&self) -> u64 {
        if self.flags & TAGGED == 0 {
            return 0;
        }
        // SAFETY: push wrote 8 bytes at `size()` for tagged entries; the
        // offset is a multiple of 8 from an 8-aligned entry.
        unsafe { ((self as *const Entry as *const u8).add(self.size()) as *const u64).read() }
    }

    /// # Safety
    /// `self` is an entry written by [`Log::push`] and still in its chunk.
    pub unsafe fn key(&self) -> &[u8] {
        // SAFETY: push wrote key_len bytes right after the header.
        unsafe {
            let p = (self as *const Entry as *const u8).add(ENTRY_HEADER);
            std::slice::from_raw_parts(p, self.key_len as usize)
        }
    }

    /// # Safety
    /// As for [`Entry::key`].
    pub unsafe fn val(&self) -> &[u8] {
        // SAFETY: push wrote val_len bytes right after the key.
        unsafe {
            let p = (self as *const Entry as *const u8).add(ENTRY_HEADER + self.key_len as usize);
            std::slice::from_raw_parts(p, self.val_len as usize)
        }
    }
}

/// The chunk list. All pointers are into memory from the allocator `A`.
pub struct Log<A: RawAlloc> {
    alloc: A,
    head: *mut Chunk,
    /// Read offset inside `head`.
    head_off: usize,
    tail: *mut Chunk,
    /// Chunks held, for the memory statistics.
    chunk_bytes: usize,
}

impl<A: RawAlloc> Log<A> {
    pub const fn new(alloc: A) -> Self {
        Log {
            alloc,
            head: ptr::null_mut(),
            head_off: 0,
            tail: ptr::null_mut(),
            chunk_bytes: 0,
        }
    }

    /// Shared memory held by the chunks.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    fn new_chunk(&mut self, min_payload: usize) -> *mut Chunk {
        let grown = if self.tail.is_null() {
            FIRST_CHUNK_PAYLOAD
        } else {
            // SAFETY: tail is a live chunk of this log.
            (unsafe { (*self.tail).cap } * 2).clamp(FIRST_CHUNK_PAYLOAD, CHUNK_PAYLOAD)
        };
        let cap = min_payload.max(grown);
        let chunk = self.alloc.alloc(CHUNK_HEADER + cap) as *mut Chunk;
        if !chunk.is_null() {
            // SAFETY: the block is at least CHUNK_HEADER bytes and aligned to 8.
            unsafe {
                chunk.write(Chunk {
                    next: ptr::null_mut(),
                    cap,
                    used: 0,
                })
            };
            self.chunk_bytes += CHUNK_HEADER + cap;
        }
        chunk
    }

    fn free_chunk(&mut self, chunk: *mut Chunk) {
        // SAFETY: chunks are only freed here, once, after leaving the list.
        unsafe {
            self.chunk_bytes -= CHUNK_HEADER + (*chunk).cap;
            self.alloc.free(chunk as *mut u8);
        }
    }

    /// Makes room for an entry of `size` bytes at the tail; false when the
    /// allocator has no memory. Nothing changes when it fails.
    pub fn reserve(&mut self, size: usize) -> bool {
        // SAFETY: tail, when not null, is a live chunk of this log.
        let fits = !self.tail.is_null() && unsafe { (*self.tail).cap - (*self.tail).used >= size };
        if fits {
            return true;
        }
        let chunk = self.new_chunk(size);
        if chunk.is_null() {
            return false;
        }
        if self.tail.is_null() {
            self.head = chunk;
            self.head_off = 0;
        } else {
            // SAFETY: tail is a live chunk; linking keeps the list well formed.
            unsafe { (*self.tail).next = chunk };
        }
        self.tail = chunk;
        true
    }

    /// Appends an entry, tagged with `seq` unless it is 0; [`Log::reserve`]
    /// must have made room for it ([`Entry::size_for`], 8 more when tagged).
    pub fn push(&mut self, key: &[u8], val: &[u8], hash: u32, seq: u64) -> *mut Entry {
        let base = Entry::size_for(key.len(), val.len());
        let size = base + if seq != 0 { 8 } else { 0 };
        // SAFETY: reserve guaranteed `size` free bytes at tail.used; the entry
        // header is aligned because every entry size is a multiple of 8.
        unsafe {
            let tail = &mut *self.tail;
            debug_assert!(tail.cap - tail.used >= size);
            let start = (self.tail as *mut u8).add(CHUNK_HEADER + tail.used);
            let entry = start as *mut Entry;
            entry.write(Entry {
                key_len: key.len() as u32,
                val_len: val.len() as u32,
                hash,
                flags: if seq != 0 { LIVE | TAGGED } else { LIVE },
                bucket_next: ptr::null_mut(),
            });
            if seq != 0 {
                (start.add(base) as *mut u64).write(seq);
            }
            let data = start.add(ENTRY_HEADER);
            ptr::copy_nonoverlapping(key.as_ptr(), data, key.len());
            ptr::copy_nonoverlapping(val.as_ptr(), data.add(key.len()), val.len());
            tail.used += size;
            entry
        }
    }

    /// The entry at the read position, live or dead, freeing chunks the
    /// reader has finished; None when the log is empty.
    pub fn front(&mut self) -> Option<*mut Entry> {
        loop {
            if self.head.is_null() {
                return None;
            }
            // SAFETY: head is a live chunk of this log.
            let (used, next) = unsafe { ((*self.head).used, (*self.head).next) };
            if self.head_off < used {
                // SAFETY: offsets below `used` always start an entry.
                return Some(
                    unsafe { (self.head as *mut u8).add(CHUNK_HEADER + self.head_off) }
                        as *mut Entry,
                );
            }
            if next.is_null() {
                return None;
            }
            let done = self.head;
            self.head = next;
            self.head_off = 0;
            self.free_chunk(done);
        }
    }

    /// Moves the read position past the entry [`Log::front`] returned.
    pub fn advance(&mut self, entry_size: usize) {
        self.head_off += entry_size;
    }

    /// Drops every entry; keeps the tail chunk for reuse if it is small.
    pub fn reset(&mut self) {
        let mut chunk = self.head;
        while !chunk.is_null() {
            // SAFETY: walking the list of live chunks, not yet freed.
            let (next, cap) = unsafe { ((*chunk).next, (*chunk).cap) };
            let keep = chunk == self.tail && cap <= KEPT_CHUNK_PAYLOAD;
            if !keep {
                self.free_chunk(chunk);
            }
            chunk = next;
        }
        if !self.tail.is_null() && self.chunk_bytes > 0 {
            // SAFETY: the tail was kept above.
            unsafe { (*self.tail).used = 0 };
            self.head = self.tail;
        } else {
            self.head = ptr::null_mut();
            self.tail = ptr::null_mut();
        }
        self.head_off = 0;
    }

    /// Calls `f` for every entry from the read position on, live or dead.
    pub fn for_each(&self, mut f: impl FnMut(*mut Entry) -> bool) {
        let mut chunk = self.head;
        let mut off = self.head_off;
        while !chunk.is_null() {
            // SAFETY: walking live chunks; offsets below `used` start entries.
            unsafe {
                while off < (*chunk).used {
                    let entry = (chunk as *mut u8).add(CHUNK_HEADER + off) as *mut Entry;
                    if !f(entry) {
                        return;
                    }
                    off += (*entry).footprint();
                }
                chunk = (*chunk).next;
            }
            off = 0;
        }
    }

    /// Moves this log's chunks out, leaving it empty, for a rewrite.
    pub fn take(&mut self) -> Log<A> {
        std::mem::replace(self, Log::new(A::default()))
    }
}

impl<A: RawAlloc> Drop for Log<A> {
    fn drop(&mut self) {
        let mut chunk = self.head;
        while !chunk.is_null() {
            // SAFETY: walking then freeing the live chunks once each.
            let next = unsafe { (*chunk).next };
            self.free_chunk(chunk);
            chunk = next;
        }
    }
}
