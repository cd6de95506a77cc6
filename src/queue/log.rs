//! Item storage: entries packed one after another into a list of chunks.
//! The reader takes entries from the head chunk, the writer appends to the
//! tail chunk; a chunk is freed once the reader has passed it. Removing an
//! item from the middle (addmode 2) only marks its entry dead.
//!
//! The chunk list is the queue's record of its items, kept whole at every
//! instruction (docs/reliability.md, "Crash consistency"): each change is
//! published by one store ([`super::step`] marks the points), chunks are
//! freed only once no longer reachable from `head`, and everything else
//! (`tail`, `chunk_bytes`, the counters and key index of the state) can be
//! rebuilt from a walk from `head` ([`Log::rebuild_tail`]).
//!
//! No allocator churn: a chunk the reader finished, or that a drain
//! dropped, joins the log's spares (a stack), and the next chunk the writer
//! needs is a spare when one is large enough. A queue that cycles between
//! empty and some items then allocates nothing once its spares hold a
//! cycle, and a fetch frees nothing. Spares age out: [`Log::age_spare`] (a
//! timer, every second) frees the spares no chunk request needed since its
//! last call (the stack's low-water mark), so an idle queue returns to one
//! small chunk at most.

use std::ptr;

use super::{step, RawAlloc};

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
/// Spares a chunk request looks at, from the top of the stack.
const SPARE_SEARCH: usize = 4;
const CHUNK_HEADER: usize = std::mem::size_of::<Chunk>();
const ENTRY_HEADER: usize = std::mem::size_of::<Entry>();
/// Largest entry a chunk can hold (offsets are 32-bit).
pub const MAX_ENTRY: usize = u32::MAX as usize - CHUNK_HEADER;

#[repr(C)]
pub struct Chunk {
    next: *mut Chunk,
    /// Payload capacity in bytes.
    cap: u32,
    /// Bytes written so far: entries below this offset are whole.
    used: u32,
    /// Bytes the reader has passed (only ever non-zero in the head chunk).
    /// In the chunk, not the list, so that taking an entry and moving to
    /// the next chunk are one store each.
    read: u32,
    /// Fetched entries of this chunk that processes read in place
    /// ([`Log::pin`]): the chunk is neither reused nor freed before they
    /// are released.
    pins: u32,
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

/// Values from this size on are copied eight bytes per instruction
/// (`rep movsq`, as gcc compiles the C module's `memcpy`); glibc's
/// `memcpy` moves them with `rep movsb`, one byte per iteration: as fast on
/// current CPUs, but eight times the instructions where those are counted.
const WORD_COPY_MIN: usize = 2048;

/// Copies `val` to `dst`.
///
/// # Safety
/// `dst` is valid for `val.len()` bytes of writes and does not overlap `val`.
#[inline]
unsafe fn copy_value(val: &[u8], dst: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    if val.len() >= WORD_COPY_MIN {
        let words = val.len() / 8;
        let rest = val.len() % 8;
        // SAFETY: rep movsq moves `words` 8-byte words from rsi to rdi,
        // both inside the ranges the caller vouches for; the direction
        // flag is clear at every call (System V ABI). The tail follows.
        unsafe {
            std::arch::asm!(
                "rep movsq",
                inout("rcx") words => _,
                inout("rsi") val.as_ptr() => _,
                inout("rdi") dst => _,
                options(nostack, preserves_flags)
            );
            ptr::copy_nonoverlapping(val.as_ptr().add(words * 8), dst.add(words * 8), rest);
        }
        return;
    }
    // SAFETY: as the caller vouches.
    unsafe { ptr::copy_nonoverlapping(val.as_ptr(), dst, val.len()) };
}

/// The chunk list. All pointers are into memory from the allocator `A`.
pub struct Log<A: RawAlloc> {
    alloc: A,
    /// The first chunk: the list from here is the record of the items.
    head: *mut Chunk,
    /// The last chunk (derived: the end of the list from `head`).
    tail: *mut Chunk,
    /// Chunks held, for the memory statistics (derived).
    chunk_bytes: usize,
    /// Chunks out of the list kept for the next chunk requests, linked
    /// through `next`, the last retired first.
    spare: *mut Chunk,
    /// Chunks in `spare` (derived; only aging relies on it).
    spares: u32,
    /// The fewest spares since the last [`Log::age_spare`]: that many
    /// were not needed, the next call frees them.
    spares_low: u32,
    /// Chunks out of the list that still have pinned entries, linked
    /// through `next`.
    held: *mut Chunk,
}

impl<A: RawAlloc> Log<A> {
    pub const fn new(alloc: A) -> Self {
        Log {
            alloc,
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            chunk_bytes: 0,
            spare: ptr::null_mut(),
            spares: 0,
            spares_low: 0,
            held: ptr::null_mut(),
        }
    }

    /// Shared memory held by the chunks, the spare and the chunks kept
    /// for pinned entries included.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes + self.spare_bytes() + list_bytes(self.held)
    }

    /// Pins the chunk of the entry [`Log::front`] returned last (the head
    /// chunk), so that the entry stays in place after it left the queue.
    pub fn pin(&mut self) -> *mut Chunk {
        // SAFETY: front returned an entry of the head chunk, which is live.
        unsafe { (*self.head).pins += 1 };
        step();
        self.head
    }

    /// Releases a pin of [`Log::pin`]. Chunks out of the list whose pins
    /// are all released are retired (also any a process that died here
    /// left behind).
    #[inline(never)]
    pub fn unpin(&mut self, chunk: *mut Chunk) {
        // SAFETY: the caller passes a chunk it pinned and has not released.
        unsafe { (*chunk).pins -= 1 };
        step();
        let mut link: *mut *mut Chunk = &mut self.held;
        // SAFETY: walking the held list of live chunks; each unlink is one
        // store, so a death leaves the chunk in the list or leaked.
        unsafe {
            while !(*link).is_null() {
                let c = *link;
                if (*c).pins == 0 {
                    *link = (*c).next;
                    step();
                    self.chunk_bytes += CHUNK_HEADER + (*c).cap as usize;
                    self.retire_chunk(c);
                } else {
                    link = &mut (*c).next;
                }
            }
        }
    }

    fn spare_bytes(&self) -> usize {
        list_bytes(self.spare)
    }

    /// A spare near the top of the stack (the first of [`SPARE_SEARCH`])
    /// that holds `min_payload` bytes (and, a chunk larger than ordinary
    /// ones, at most twice that: a big block is not spent on small items),
    /// emptied; it leaves the stack with one store (a death after it leaks
    /// the chunk).
    fn take_spare(&mut self, min_payload: usize) -> *mut Chunk {
        let mut link: *mut *mut Chunk = &mut self.spare;
        let mut chunk = ptr::null_mut();
        // SAFETY: walking the spare stack of live chunks of this log.
        unsafe {
            for _ in 0..SPARE_SEARCH {
                let c = *link;
                if c.is_null() {
                    return ptr::null_mut();
                }
                let cap = (*c).cap as usize;
                if cap >= min_payload && (cap <= CHUNK_PAYLOAD || cap / 2 <= min_payload) {
                    chunk = c;
                    break;
                }
                link = &mut (*c).next;
            }
            if chunk.is_null() {
                return ptr::null_mut();
            }
            *link = (*chunk).next;
        }
        step();
        self.spares = self.spares.saturating_sub(1);
        self.spares_low = self.spares_low.min(self.spares);
        // SAFETY: the chunk is ours alone now: in no list, not the spare.
        unsafe {
            (*chunk).next = ptr::null_mut();
            (*chunk).used = 0;
            (*chunk).read = 0;
            self.chunk_bytes += CHUNK_HEADER + (*chunk).cap as usize;
        }
        chunk
    }

    /// Frees spares no chunk request needed since the last call (a timer
    /// calls this every second): half of those below the stack's low-water
    /// mark (the least recently retired) while requests take spares, all
    /// once none did. A spare outlives the queue's last refill by one to
    /// two calls.
    pub fn age_spare(&mut self) {
        // In use (a request took a spare): half of the unneeded ones go,
        // so a burst now and then finds most of its chunks still there.
        // Idle (none taken): all of them.
        let unneeded = if self.spares_low < self.spares {
            self.spares_low / 2
        } else {
            self.spares
        };
        let keep = self.spares.saturating_sub(unneeded);
        let mut link: *mut *mut Chunk = &mut self.spare;
        // SAFETY: walking the spare stack of live chunks; the cut is one
        // store, after which the rest is ours alone to free.
        unsafe {
            for _ in 0..keep {
                if (*link).is_null() {
                    break;
                }
                link = &mut (**link).next;
            }
            let mut chunk = *link;
            *link = ptr::null_mut();
            step();
            while !chunk.is_null() {
                let next = (*chunk).next;
                self.alloc.free(chunk as *mut u8);
                chunk = next;
            }
        }
        self.spares = keep;
        self.spares_low = keep;
    }

    fn new_chunk(&mut self, min_payload: usize) -> *mut Chunk {
        let spare = self.take_spare(min_payload);
        if !spare.is_null() {
            return spare;
        }
        let grown = if self.tail.is_null() {
            FIRST_CHUNK_PAYLOAD
        } else {
            // SAFETY: tail is a live chunk of this log.
            (unsafe { (*self.tail).cap } as usize * 2).clamp(FIRST_CHUNK_PAYLOAD, CHUNK_PAYLOAD)
        };
        let cap = min_payload.max(grown);
        if cap > MAX_ENTRY {
            return ptr::null_mut();
        }
        let chunk = self.alloc.alloc(CHUNK_HEADER + cap) as *mut Chunk;
        if !chunk.is_null() {
            // SAFETY: the block is at least CHUNK_HEADER bytes and aligned to 8.
            unsafe {
                chunk.write(Chunk {
                    next: ptr::null_mut(),
                    cap: cap as u32,
                    used: 0,
                    read: 0,
                    pins: 0,
                })
            };
            self.chunk_bytes += CHUNK_HEADER + cap;
        }
        chunk
    }

    /// Frees a chunk that no list reaches any more.
    fn free_chunk(&mut self, chunk: *mut Chunk) {
        // SAFETY: chunks are only freed here, once, after leaving the list.
        unsafe {
            self.chunk_bytes -= CHUNK_HEADER + (*chunk).cap as usize;
            self.alloc.free(chunk as *mut u8);
        }
    }

    /// A chunk no list reaches any more: held while it has pins, else a
    /// spare.
    #[inline(never)]
    fn retire_chunk(&mut self, chunk: *mut Chunk) {
        self.retire_or_free(chunk, true);
    }

    /// As [`Log::retire_chunk`], freeing the chunk instead of keeping it
    /// as a spare unless `spare`.
    fn retire_or_free(&mut self, chunk: *mut Chunk, spare: bool) {
        // SAFETY: chunk is a live chunk of this log, unlinked by the caller.
        let (cap, pins) = unsafe { ((*chunk).cap as usize, (*chunk).pins) };
        if pins > 0 {
            self.chunk_bytes -= CHUNK_HEADER + cap;
            // SAFETY: as above; linking it first is one store.
            unsafe { (*chunk).next = self.held };
            step();
            self.held = chunk;
            step();
            return;
        }
        if !spare {
            self.free_chunk(chunk);
            return;
        }
        self.chunk_bytes -= CHUNK_HEADER + cap;
        // SAFETY: as above; linking it first is one store.
        unsafe { (*chunk).next = self.spare };
        step();
        self.spare = chunk;
        step();
        self.spares += 1;
    }

    /// Retires the chunks from `chunk` on, up to (not including) `stop`
    /// (as spares if `spare`); the caller has already unlinked them from
    /// the list.
    fn retire_chain(&mut self, mut chunk: *mut Chunk, stop: *mut Chunk, spare: bool) {
        while !chunk.is_null() && chunk != stop {
            // SAFETY: walking a detached chain of chunks not yet freed.
            let next = unsafe { (*chunk).next };
            self.retire_or_free(chunk, spare);
            chunk = next;
        }
    }

    /// Frees the chunks from `chunk` on, up to (not including) `stop`;
    /// the caller has already unlinked them from the list.
    fn free_chain(&mut self, mut chunk: *mut Chunk, stop: *mut Chunk) {
        while !chunk.is_null() && chunk != stop {
            // SAFETY: walking a detached chain of chunks not yet freed.
            let next = unsafe { (*chunk).next };
            self.free_chunk(chunk);
            chunk = next;
        }
    }

    /// Makes room for an entry of `size` bytes at the tail; false when the
    /// allocator has no memory. Nothing changes when it fails.
    #[inline]
    pub fn reserve(&mut self, size: usize) -> bool {
        let fits = !self.tail.is_null()
            // SAFETY: tail, when not null, is a live chunk of this log.
            && unsafe { ((*self.tail).cap - (*self.tail).used) as usize >= size };
        if fits {
            return true;
        }
        let chunk = self.new_chunk(size);
        if chunk.is_null() {
            return false;
        }
        // A new chunk is unreachable (a leak at worst) until linked.
        step();
        if self.tail.is_null() {
            self.head = chunk;
        } else {
            // SAFETY: tail is a live chunk; linking keeps the list well formed.
            unsafe { (*self.tail).next = chunk };
        }
        step();
        self.tail = chunk;
        true
    }

    /// Appends an entry, tagged with `seq` unless it is 0; [`Log::reserve`]
    /// must have made room for it ([`Entry::size_for`], 8 more when tagged).
    /// The entry, tag included, is part of the queue from the store of the
    /// tail's `used` on.
    pub fn push(&mut self, key: &[u8], val: &[u8], hash: u32, seq: u64) -> *mut Entry {
        let base = Entry::size_for(key.len(), val.len());
        let size = base + if seq != 0 { 8 } else { 0 };
        // SAFETY: reserve guaranteed `size` free bytes at tail.used; the entry
        // header is aligned because every entry size is a multiple of 8.
        unsafe {
            let tail = &mut *self.tail;
            debug_assert!((tail.cap - tail.used) as usize >= size);
            let start = (self.tail as *mut u8).add(CHUNK_HEADER + tail.used as usize);
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
            copy_value(val, data.add(key.len()));
            step();
            tail.used += size as u32;
            step();
            entry
        }
    }

    /// The entry at the read position, live or dead, freeing chunks the
    /// reader has finished; None when the log is empty.
    #[inline]
    pub fn front(&mut self) -> Option<*mut Entry> {
        loop {
            if self.head.is_null() {
                return None;
            }
            // SAFETY: head is a live chunk of this log.
            let (read, used, next) =
                unsafe { ((*self.head).read, (*self.head).used, (*self.head).next) };
            if read < used {
                // SAFETY: offsets below `used` always start an entry.
                return Some(
                    unsafe { (self.head as *mut u8).add(CHUNK_HEADER + read as usize) }
                        as *mut Entry,
                );
            }
            if next.is_null() {
                return None;
            }
            let done = self.head;
            self.head = next;
            step();
            self.retire_chunk(done);
        }
    }

    /// Moves the read position past the entry [`Log::front`] returned: from
    /// this store on, the entry is no longer in the queue.
    pub fn advance(&mut self, entry_size: usize) {
        // SAFETY: front returned an entry of the head chunk.
        unsafe { (*self.head).read += entry_size as u32 };
        step();
    }

    /// Drops every entry; keeps the tail chunk for reuse if it is small,
    /// the others as spares if `spare` (else they are freed). `head = null`
    /// publishes the empty log; the rest only frees.
    pub fn reset(&mut self, spare: bool) {
        let (first, tail) = (self.head, self.tail);
        // SAFETY: tail, when not null, is a live chunk of this log.
        let keep = if !tail.is_null()
            // SAFETY: as above.
            && unsafe { (*tail).pins == 0 && (*tail).cap as usize <= KEPT_CHUNK_PAYLOAD }
        {
            tail
        } else {
            ptr::null_mut()
        };
        self.head = ptr::null_mut();
        step();
        self.tail = ptr::null_mut();
        // keep, the tail, is the last chunk of the list from first.
        self.retire_chain(first, keep, spare);
        if keep.is_null() {
            return;
        }
        // SAFETY: keep is a chunk of this log, no longer linked.
        unsafe {
            (*keep).used = 0;
            (*keep).read = 0;
            (*keep).next = ptr::null_mut();
        }
        step();
        self.tail = keep;
        self.head = keep;
        step();
    }

    /// Calls `f` for every entry from the read position on, live or dead.
    pub fn for_each(&self, mut f: impl FnMut(*mut Entry) -> bool) {
        let mut chunk = self.head;
        while !chunk.is_null() {
            // SAFETY: walking live chunks; offsets from `read` below `used`
            // start entries.
            unsafe {
                let mut off = (*chunk).read as usize;
                while off < (*chunk).used as usize {
                    let entry = (chunk as *mut u8).add(CHUNK_HEADER + off) as *mut Entry;
                    if !f(entry) {
                        return;
                    }
                    off += (*entry).footprint();
                }
                chunk = (*chunk).next;
            }
        }
    }

    /// Replaces the whole list by `fresh`'s (a rewrite built aside): one
    /// store of `head` publishes it, then the old chunks are freed.
    pub fn replace_with(&mut self, fresh: Log<A>) {
        let fresh = std::mem::ManuallyDrop::new(fresh);
        let old = self.head;
        self.head = fresh.head;
        step();
        self.tail = fresh.tail;
        let fresh_bytes = fresh.chunk_bytes;
        // The copy took what it needed from the allocator: the old chunks
        // go back to it (spares would pile up with every compaction).
        self.retire_chain(old, ptr::null_mut(), false);
        self.chunk_bytes = fresh_bytes;
    }

    /// Sets the derived fields (`tail`, `chunk_bytes`) from the list, after
    /// a process died changing it.
    pub fn rebuild_tail(&mut self) {
        let mut tail = ptr::null_mut();
        let mut bytes = 0;
        let mut chunk = self.head;
        while !chunk.is_null() {
            tail = chunk;
            // SAFETY: the list from head holds only live chunks.
            unsafe {
                bytes += CHUNK_HEADER + (*chunk).cap as usize;
                chunk = (*chunk).next;
            }
        }
        self.tail = tail;
        self.chunk_bytes = bytes;
    }
}

#[cfg(test)]
impl<A: RawAlloc> Log<A> {
    /// Panics unless `tail` and `chunk_bytes` agree with the list.
    pub fn check_derived(&self) {
        let (tail, bytes) = (self.tail, self.chunk_bytes);
        let mut copy = Log {
            alloc: A::default(),
            head: self.head,
            tail: ptr::null_mut(),
            chunk_bytes: 0,
            spare: ptr::null_mut(),
            spares: 0,
            spares_low: 0,
            held: ptr::null_mut(),
        };
        copy.rebuild_tail();
        let derived = (copy.tail, copy.chunk_bytes);
        copy.head = ptr::null_mut();
        assert_eq!((tail, bytes), derived);
    }
}

/// Shared memory of the chunks of a list (the spare stack, the held
/// list), headers included.
fn list_bytes(mut chunk: *mut Chunk) -> usize {
    let mut bytes = 0;
    while !chunk.is_null() {
        // SAFETY: the lists link live chunks of the log.
        unsafe {
            bytes += CHUNK_HEADER + (*chunk).cap as usize;
            chunk = (*chunk).next;
        }
    }
    bytes
}

impl<A: RawAlloc> Drop for Log<A> {
    fn drop(&mut self) {
        let head = self.head;
        self.head = ptr::null_mut();
        self.free_chain(head, ptr::null_mut());
        // The spare stack and the held list link live chunks of this log,
        // each on one list; the log goes, so do the entries pinned in them.
        for list in [
            std::mem::replace(&mut self.spare, ptr::null_mut()),
            std::mem::replace(&mut self.held, ptr::null_mut()),
        ] {
            let mut chunk = list;
            while !chunk.is_null() {
                // SAFETY: a live chunk of one of the lists above, freed once.
                unsafe {
                    let next = (*chunk).next;
                    self.alloc.free(chunk as *mut u8);
                    chunk = next;
                }
            }
        }
    }
}
