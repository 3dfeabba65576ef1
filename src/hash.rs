//! The hash maps of the hot paths: operators' in-memory state and the
//! per-epoch grouping of rows by key.
//!
//! Keys there are short byte strings (a group key in Arrow's row format, a
//! join row), hashed once or more per input row, so the hasher matters:
//! std's SipHash-1-3 was 4-7% of a stateful Nexmark query. foldhash is a
//! fast non-cryptographic hash seeded per map (`RandomState`), which keeps
//! a crafted set of keys from colliding on every map.

/// A `std` hash map with foldhash's seeded hasher; build one with
/// `HashMap::default()`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `std` hash set with foldhash's seeded hasher.
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
