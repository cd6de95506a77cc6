//! The counters of a queue, listed once: the statistics framework
//! (`mqueue:<queue>_<name>`), `mqueue.stats` and the fields of a Redis
//! queue's counter hash (`mqueue:<name>:stats`) are all views of [`ALL`].

use super::Stats;

/// Which counter: the index of its entry in [`ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Id {
    Size,
    Added,
    Fetched,
    Evicted,
    Replaced,
    Rejected,
    Cleared,
    Redelivered,
    /// Redis queues: entries moved to the dead letters.
    Dead,
    Leased,
    Syncs,
    Failed,
    MaxSize,
    ItemBytes,
    ShmBytes,
}

/// Who keeps a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keeper {
    /// The queue's storage: the shm state of a memory queue, the counter
    /// hash every instance shares for a Redis queue (a field of this name).
    Storage,
    /// The queue's size: the item count, or the stream's length.
    Length,
    /// This instance, whatever the storage (failed calls).
    Instance,
    /// Only a queue in shared memory has it (0 elsewhere).
    SharedMemory,
    /// Only a durable queue's log has it (0 elsewhere).
    Log,
}

/// One counter.
pub struct Counter {
    pub id: Id,
    /// Suffix of the statistic and field name in `mqueue.stats`.
    pub name: &'static str,
    pub doc: &'static str,
    pub keeper: Keeper,
    /// Registered in Kamailio's statistics framework.
    pub statistic: bool,
}

const fn counter(id: Id, name: &'static str, keeper: Keeper, doc: &'static str) -> Counter {
    Counter {
        id,
        name,
        doc,
        keeper,
        statistic: true,
    }
}

/// Every counter, in [`Id`] order (checked by a unit test).
pub const ALL: [Counter; 15] = [
    counter(Id::Size, "size", Keeper::Length, "items queued now"),
    counter(
        Id::Added,
        "added",
        Keeper::Storage,
        "items added since start",
    ),
    counter(
        Id::Fetched,
        "fetched",
        Keeper::Storage,
        "items fetched since start",
    ),
    counter(
        Id::Evicted,
        "evicted",
        Keeper::Storage,
        "oldest items dropped by the size or byte limit",
    ),
    counter(
        Id::Replaced,
        "replaced",
        Keeper::Storage,
        "items replaced by a newer one with the same key (addmode 2)",
    ),
    counter(
        Id::Rejected,
        "rejected",
        Keeper::Storage,
        "adds refused: key already queued (addmode 1)",
    ),
    counter(
        Id::Cleared,
        "cleared",
        Keeper::Storage,
        "items dropped by mqueue.clear",
    ),
    counter(
        Id::Redelivered,
        "redelivered",
        Keeper::Storage,
        "items delivered again after their consumer did not finish them",
    ),
    counter(
        Id::Dead,
        "dead",
        Keeper::Storage,
        "items moved to the dead letters after max_deliveries (Redis queues)",
    ),
    counter(
        Id::Leased,
        "leased",
        Keeper::Log,
        "items fetched and not acknowledged yet (durable queues)",
    ),
    counter(
        Id::Syncs,
        "syncs",
        Keeper::Log,
        "syncs of the log to disk (durable queues)",
    ),
    counter(
        Id::Failed,
        "failed",
        Keeper::Instance,
        "calls that failed in this instance (adds without shared memory or too large, Redis calls, durable log writes)",
    ),
    counter(
        Id::MaxSize,
        "max_size",
        Keeper::SharedMemory,
        "highest number of items queued",
    ),
    Counter {
        statistic: false,
        ..counter(
            Id::ItemBytes,
            "item_bytes",
            Keeper::SharedMemory,
            "bytes the items take",
        )
    },
    counter(
        Id::ShmBytes,
        "shm_bytes",
        Keeper::SharedMemory,
        "shared memory held for the items",
    ),
];

/// How many counters the storage keeps.
const STORAGE_COUNT: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < ALL.len() {
        if matches!(ALL[i].keeper, Keeper::Storage) {
            n += 1;
        }
        i += 1;
    }
    n
};

/// The counters the storage keeps, by name: the fields of a Redis queue's
/// counter hash.
pub const STORAGE_NAMES: [&str; STORAGE_COUNT] = {
    let mut names = [""; STORAGE_COUNT];
    let (mut n, mut i) = (0, 0);
    while i < ALL.len() {
        if matches!(ALL[i].keeper, Keeper::Storage) {
            names[n] = ALL[i].name;
            n += 1;
        }
        i += 1;
    }
    names
};

/// A queue's counter values, indexed by [`Id`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Values([u64; ALL.len()]);

impl Values {
    pub fn get(&self, id: Id) -> u64 {
        self.0[id as usize]
    }

    pub fn set(&mut self, id: Id, v: u64) {
        self.0[id as usize] = v;
    }

    /// Every counter with its value, in [`ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Counter, u64)> + '_ {
        ALL.iter().map(|c| (c, self.get(c.id)))
    }
}

impl From<&Stats> for Values {
    fn from(s: &Stats) -> Values {
        let mut v = Values::default();
        for (id, n) in [
            (Id::Size, s.size as u64),
            (Id::Added, s.added),
            (Id::Fetched, s.fetched),
            (Id::Evicted, s.evicted),
            (Id::Replaced, s.replaced),
            (Id::Rejected, s.rejected),
            (Id::Cleared, s.cleared),
            (Id::Failed, s.failed),
            (Id::MaxSize, s.max_size as u64),
            (Id::ItemBytes, s.item_bytes as u64),
            (Id::ShmBytes, s.shm_bytes as u64),
        ] {
            v.set(id, n);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_id_order_with_unique_names() {
        for (i, c) in ALL.iter().enumerate() {
            assert_eq!(c.id as usize, i, "{}", c.name);
            assert_eq!(ALL.iter().filter(|o| o.name == c.name).count(), 1);
        }
        assert_eq!(
            STORAGE_NAMES,
            [
                "added",
                "fetched",
                "evicted",
                "replaced",
                "rejected",
                "cleared",
                "redelivered",
                "dead"
            ]
        );
    }

    #[test]
    fn values_from_core_stats() {
        let s = Stats {
            size: 3,
            added: 5,
            failed: 1,
            shm_bytes: 64,
            ..Stats::default()
        };
        let v = Values::from(&s);
        assert_eq!(
            (
                v.get(Id::Size),
                v.get(Id::Added),
                v.get(Id::Failed),
                v.get(Id::ShmBytes)
            ),
            (3, 5, 1, 64)
        );
        assert_eq!(v.get(Id::Redelivered), 0);
    }
}
