//! The key space of the store: every key starts with a one-byte tag, and
//! [`KEY_SPACES`] lists each tag, what its keys hold, which module owns
//! them, and how they belong to a relation. Nothing else in the crate picks
//! a tag.
//!
//! A relation's keys are the tag and its id (4 bytes, big-endian), either
//! as the whole key (one value per relation: its catalog entry, its
//! watermark) or as a prefix (many: its rows, its operators' state, its
//! sink's outbox). Dropping a relation deletes, for every space with a
//! relation scope, the key or the keys under the prefix ([`relation_keys`]):
//! a new per-relation feature adds its row here and is cleaned up with the
//! relation, without touching the code that drops it.
//!
//! Keys are compared as bytes, so big-endian ids and epochs keep numeric
//! order (the catalog entries come back in creation order, the epoch log
//! in epoch order).

use super::Epoch;

/// How the keys of a space belong to relations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Not per relation (roles, the epoch log, store metadata).
    Global,
    /// One key per relation: the tag and the relation's id.
    RelationKey,
    /// Any number of keys per relation, under the tag and its id.
    RelationPrefix,
}

/// One tag of the key space.
#[derive(Debug)]
pub struct KeySpace {
    pub tag: u8,
    /// What its keys hold.
    pub holds: &'static str,
    /// The module that reads and writes them.
    pub owner: &'static str,
    pub scope: Scope,
}

const ROLES: u8 = b'a';
const FEED_ERRORS: u8 = b'b';
const CATALOG: u8 = b'c';
const COMMENTS: u8 = b'd';
const FAILURES: u8 = b'f';
const ACLS: u8 = b'g';
const LOG: u8 = b'l';
const META: u8 = b'm';
const OUTBOX: u8 = b'o';
const FEED_POSITIONS: u8 = b'p';
const ROWS: u8 = b'r';
const OPERATOR_STATE: u8 = b's';
const WATERMARKS: u8 = b'w';

/// Every tag in use. (`make test` checks that no two share a tag and that
/// every key built below starts with one of them.)
pub const KEY_SPACES: &[KeySpace] = &[
    KeySpace { tag: ROLES, holds: "roles (name -> attributes)", owner: "catalog::access", scope: Scope::Global },
    KeySpace {
        tag: FEED_ERRORS,
        holds: "a connector-fed table's bad records, by partition and offset",
        owner: "db::feed",
        scope: Scope::RelationPrefix,
    },
    KeySpace {
        tag: CATALOG,
        holds: "a relation's defining statement",
        owner: "sql::ddl (written through db::coordinator)",
        scope: Scope::RelationKey,
    },
    KeySpace {
        tag: COMMENTS,
        holds: "a relation's COMMENT ON texts",
        owner: "sql::comment",
        scope: Scope::RelationKey,
    },
    KeySpace {
        tag: FAILURES,
        holds: "a materialized view whose dataflow failed (the error)",
        owner: "db::coordinator",
        scope: Scope::RelationKey,
    },
    KeySpace { tag: ACLS, holds: "a relation's owner and grants", owner: "catalog::access", scope: Scope::RelationKey },
    KeySpace {
        tag: LOG,
        holds: "the epoch log: table changes since the last checkpoint",
        owner: "db::epoch_log",
        scope: Scope::Global,
    },
    KeySpace { tag: META, holds: "store metadata (format, epoch)", owner: "state::durable", scope: Scope::Global },
    KeySpace {
        tag: OUTBOX,
        holds: "a sink's changes per epoch, until delivered",
        owner: "db::sinks",
        scope: Scope::RelationPrefix,
    },
    KeySpace {
        tag: FEED_POSITIONS,
        holds: "a connector-fed table's read position",
        owner: "db::feed",
        scope: Scope::RelationKey,
    },
    KeySpace {
        tag: ROWS,
        holds: "a table's or materialized view's rows",
        owner: "db::storage",
        scope: Scope::RelationPrefix,
    },
    KeySpace {
        tag: OPERATOR_STATE,
        holds: "a view's operator state and event-time counters",
        owner: "stream::state_table",
        scope: Scope::RelationPrefix,
    },
    KeySpace { tag: WATERMARKS, holds: "a table's watermark", owner: "db::coordinator", scope: Scope::RelationKey },
];

/// The tag and a relation's id: a relation's key, or its keys' prefix.
const fn tagged(tag: u8, relation_id: u32) -> [u8; 5] {
    let id = relation_id.to_be_bytes();
    [tag, id[0], id[1], id[2], id[3]]
}

/// Every key space a relation has keys in: `(scope, key or prefix)`.
pub fn relation_keys(relation_id: u32) -> impl Iterator<Item = (Scope, [u8; 5])> {
    KEY_SPACES.iter().filter(|s| s.scope != Scope::Global).map(move |s| (s.scope, tagged(s.tag, relation_id)))
}

/// Prefix of role records.
pub const ROLE_PREFIX: &[u8] = &[ROLES];

/// Key of a role's record.
pub fn role_key(name: &str) -> Vec<u8> {
    let mut key = ROLE_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// Prefix of a sink's outbox: one entry per epoch (then the epoch), the
/// epoch's changes to deliver, written with the epoch.
pub fn outbox_prefix(sink_id: u32) -> [u8; 5] {
    tagged(OUTBOX, sink_id)
}

pub fn outbox_key(sink_id: u32, epoch: Epoch) -> Vec<u8> {
    let mut key = outbox_prefix(sink_id).to_vec();
    key.extend_from_slice(&epoch.to_be_bytes());
    key
}

/// Key of one relation's catalog entry (its defining statement).
pub fn catalog_key(relation_id: u32) -> [u8; 5] {
    tagged(CATALOG, relation_id)
}

/// Prefix of all catalog entries, in relation-id (creation) order.
pub const CATALOG_PREFIX: &[u8] = &[CATALOG];

/// Key of a relation's COMMENT ON texts.
pub fn comment_key(relation_id: u32) -> [u8; 5] {
    tagged(COMMENTS, relation_id)
}

/// Prefix of all relations' comments.
pub const COMMENT_PREFIX: &[u8] = &[COMMENTS];

/// Key of a relation's access record (owner and grants).
pub fn acl_key(relation_id: u32) -> [u8; 5] {
    tagged(ACLS, relation_id)
}

/// Prefix of all relations' access records.
pub const ACL_PREFIX: &[u8] = &[ACLS];

/// Key prefix of one relation's (table's or view's) rows.
pub fn relation_prefix(relation_id: u32) -> [u8; 5] {
    tagged(ROWS, relation_id)
}

/// Key prefix of one stateful operator of a materialized view: the view's
/// id, then the operator's number in the view's dataflow (stable because the
/// dataflow is lowered from the same stored statement by the same rules).
pub fn operator_prefix(view_id: u32, operator: u16) -> [u8; 7] {
    let [tag, a, b, c, d] = view_state_prefix(view_id);
    let [hi, lo] = operator.to_be_bytes();
    [tag, a, b, c, d, hi, lo]
}

/// Prefix of all operator state of one view.
pub fn view_state_prefix(view_id: u32) -> [u8; 5] {
    tagged(OPERATOR_STATE, view_id)
}

/// Key of a view's event-time counters (late rows), among its operator
/// state (so DROP and rebuilds clear it), written at checkpoints.
pub fn view_stats_key(view_id: u32) -> [u8; 7] {
    operator_prefix(view_id, u16::MAX)
}

/// Key marking a materialized view whose dataflow failed (value: the error).
pub fn failure_key(view_id: u32) -> [u8; 5] {
    tagged(FAILURES, view_id)
}

/// Key of a table's watermark (an 8-byte big-endian integer in the
/// watermark column's unit), written with every epoch that moves it.
pub fn watermark_key(relation_id: u32) -> [u8; 5] {
    tagged(WATERMARKS, relation_id)
}

/// Key of a connector-fed table's read position, written in the same
/// batch as the rows read up to it.
pub fn feed_position_key(table_id: u32) -> [u8; 5] {
    tagged(FEED_POSITIONS, table_id)
}

/// Prefix of a connector-fed table's bad records (then partition and
/// offset, big-endian).
pub fn feed_errors_prefix(table_id: u32) -> [u8; 5] {
    tagged(FEED_ERRORS, table_id)
}

/// Prefix of the epoch log's entries, in epoch order.
pub const LOG_PREFIX: &[u8] = &[LOG];

/// Key of the epoch log's entry for `epoch`.
pub fn log_key(epoch: Epoch) -> [u8; 9] {
    let [a, b, c, d, e, f, g, h] = epoch.to_be_bytes();
    [LOG, a, b, c, d, e, f, g, h]
}

/// Prefix of the store's own metadata.
pub const META_PREFIX: &[u8] = &[META];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_has_one_space() {
        let mut tags: Vec<u8> = KEY_SPACES.iter().map(|s| s.tag).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), KEY_SPACES.len(), "two key spaces share a tag");
    }

    #[test]
    fn every_key_built_here_is_in_a_listed_space_with_its_scope() {
        let space = |key: &[u8]| KEY_SPACES.iter().find(|s| Some(&s.tag) == key.first()).map(|s| s.scope);
        let relation = 7;
        for key in [catalog_key(relation), comment_key(relation), acl_key(relation), failure_key(relation)]
            .into_iter()
            .chain([watermark_key(relation), feed_position_key(relation)])
        {
            assert_eq!(space(&key), Some(Scope::RelationKey), "{key:?}");
        }
        for key in [
            outbox_key(relation, 3),
            relation_prefix(relation).to_vec(),
            operator_prefix(relation, 2).to_vec(),
            view_stats_key(relation).to_vec(),
            feed_errors_prefix(relation).to_vec(),
        ] {
            assert_eq!(space(&key), Some(Scope::RelationPrefix), "{key:?}");
            assert!(relation_keys(relation).any(|(_, prefix)| key.starts_with(&prefix)), "{key:?}");
        }
        for key in [role_key("alice"), log_key(5).to_vec(), META_PREFIX.to_vec()] {
            assert_eq!(space(&key), Some(Scope::Global), "{key:?}");
        }
        // Another relation's keys never fall under this one's prefixes.
        assert!(!relation_keys(relation).any(|(_, prefix)| relation_prefix(relation + 256).starts_with(&prefix)));
    }

    #[test]
    fn ids_and_epochs_keep_their_order_as_bytes() {
        assert!(catalog_key(255) < catalog_key(256));
        assert!(log_key(255) < log_key(256));
    }
}
