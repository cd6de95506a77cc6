//! The set of queues. Each queue's state lives in shared memory; the list of
//! them and the name index are process-local, built in the main process
//! while the configuration is read (before the fork) and frozen at
//! `mod_init`, so every process resolves names without a lock.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::persist::DbMode;
use crate::kamailio::shm::{init_lasting, shm_slots, ShmAlloc};
use crate::queue::{AddMode, Doorbell, Limits, Queue, QueueState, WaitableQueue};
use crate::stream::StreamSpec;

/// Where a queue keeps its items, chosen once, when it is defined.
pub enum Backend {
    /// Shared memory, as the C module does.
    Memory,
    /// A Redis Stream (`redis=URL`) every instance configured with it
    /// shares; the shm queue then only keeps this instance's counters
    /// (failed calls).
    Remote(Box<StreamSpec>),
    /// Shared memory backed by a crash-safe log in `durable_dir`
    /// (`durable=sync|N`); the shm queue beside it is not used.
    Durable(super::durable::DurableRef),
}

/// One defined queue.
pub struct QueueDef {
    pub name: Vec<u8>,
    pub dbmode: DbMode,
    pub backend: Backend,
    shared: *const WaitableQueue<ShmAlloc>,
}

// SAFETY: `shared` points into shm, valid in every process for the life of
// the server; all access to the state goes through its cross-process lock.
unsafe impl Send for QueueDef {}
// SAFETY: as above: the pointer is never written after definition.
unsafe impl Sync for QueueDef {}

impl QueueDef {
    pub fn queue(&self) -> &Queue<ShmAlloc> {
        &self.shared().queue
    }

    /// What processes waiting for an item of this queue sleep on.
    pub fn bell(&self) -> &Doorbell {
        &self.shared().bell
    }

    fn shared(&self) -> &WaitableQueue<ShmAlloc> {
        // SAFETY: set from a slot of shm_slots at definition and never freed while the
        // module is loaded (mod_destroy runs after every worker stopped).
        unsafe { &*self.shared }
    }

    /// The name for a log line (cut to 256 bytes, see `log::shown`).
    pub fn name_lossy(&self) -> String {
        crate::kamailio::log::shown(&self.name)
    }

    /// The Redis stream of a queue on Redis.
    pub fn remote(&self) -> Option<&StreamSpec> {
        match &self.backend {
            Backend::Remote(st) => Some(st.as_ref()),
            Backend::Memory | Backend::Durable(_) => None,
        }
    }
}

pub struct Registry {
    pub queues: Vec<QueueDef>,
    by_name: HashMap<Vec<u8>, usize>,
    /// Free slots of the last block of queue heads, and the next one.
    slots_left: usize,
    next_slot: *mut WaitableQueue<ShmAlloc>,
}

// By hand: `Default` for raw pointers is newer than our rust-version.
impl Default for Registry {
    fn default() -> Self {
        Registry {
            queues: Vec::new(),
            by_name: HashMap::new(),
            slots_left: 0,
            next_slot: std::ptr::null_mut(),
        }
    }
}

// SAFETY: `next_slot` points into shm (see QueueDef); the registry is
// built in the main process only, behind PENDING's mutex.
unsafe impl Send for Registry {}
// SAFETY: frozen, the registry is read only; `next_slot` is not used.
unsafe impl Sync for Registry {}

/// Queue heads per shm block: the heads of many queues share one block,
/// so a queue costs its head and no allocator overhead.
const SLOTS_PER_BLOCK: usize = 256;

impl Registry {
    /// Places a queue head in the current block of heads, or a new one.
    fn place(&mut self, head: WaitableQueue<ShmAlloc>) -> Option<*mut WaitableQueue<ShmAlloc>> {
        if self.slots_left == 0 {
            self.next_slot = shm_slots(SLOTS_PER_BLOCK)?;
            self.slots_left = SLOTS_PER_BLOCK;
        }
        let p = self.next_slot;
        // SAFETY: p is a free slot of a block of SLOTS_PER_BLOCK heads
        // (slots_left > 0), written once here; the next slot is inside
        // the block or one past its end, used only after a new block.
        unsafe {
            p.write(head);
            self.next_slot = p.add(1);
        }
        self.slots_left -= 1;
        Some(p)
    }
}

impl Registry {
    pub fn index_of(&self, name: &[u8]) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

static PENDING: Mutex<Option<Registry>> = Mutex::new(None);
static FROZEN: OnceLock<Registry> = OnceLock::new();

/// A seed for a queue's key hash.
pub(super) fn random_seed() -> u64 {
    crate::queue::random_u64()
}

/// Defines a queue (module parameters). Errors name the problem.
pub fn define(
    name: &[u8],
    mode: AddMode,
    limits: Limits,
    dbmode: DbMode,
    backend: Backend,
) -> Result<(), String> {
    if FROZEN.get().is_some() {
        return Err("queues can only be defined while the configuration is read".into());
    }
    let mut pending = PENDING
        .lock()
        .map_err(|_| "queue registry poisoned".to_string())?;
    let reg = pending.get_or_insert_with(Registry::default);
    if reg.by_name.contains_key(name) {
        return Err(format!(
            "mqueue redefined: {}",
            crate::kamailio::log::shown(name)
        ));
    }
    if !init_lasting() {
        return Err("no more shm for the queue bodies".into());
    }
    let state = QueueState::<ShmAlloc>::new(mode, limits, random_seed());
    let shared = reg
        .place(WaitableQueue {
            queue: Queue::new(state),
            bell: Doorbell::new(),
        })
        .ok_or_else(|| format!("no more shm for: {}", crate::kamailio::log::shown(name)))?;
    reg.by_name.insert(name.to_vec(), reg.queues.len());
    reg.queues.push(QueueDef {
        name: name.to_vec(),
        dbmode,
        backend,
        shared,
    });
    Ok(())
}

/// Ends the definition phase (mod_init): from now on lookups take no lock.
pub fn freeze() -> &'static Registry {
    let reg = PENDING
        .lock()
        .ok()
        .and_then(|mut p| p.take())
        .unwrap_or_default();
    FROZEN.get_or_init(|| reg)
}

/// The frozen registry, or None before mod_init.
pub fn frozen() -> Option<&'static Registry> {
    FROZEN.get()
}

/// Runs `f` on the registry in either phase.
pub fn with<R>(f: impl FnOnce(&Registry) -> R) -> R {
    match FROZEN.get() {
        Some(reg) => f(reg),
        None => {
            let pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
            match pending.as_ref() {
                Some(reg) => f(reg),
                None => f(&Registry::default()),
            }
        }
    }
}

/// Index of the queue with this name.
pub fn lookup(name: &[u8]) -> Option<usize> {
    match FROZEN.get() {
        Some(reg) => reg.index_of(name),
        None => with(|r| r.index_of(name)),
    }
}
