//! The catalog: tables, materialized views and plain views, their schemas,
//! keys and dependencies, and their registration with DataFusion so that
//! ad-hoc queries (and pg_catalog / information_schema) see them.
//!
//! It owns names and metadata; rows live in the state store, and what runs
//! (epochs, writes, feeds, sinks, the dataflows that maintain views) lives
//! in `db`.

pub mod privileges;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::logical_expr::Expr;
use parking_lot::{Mutex, RwLock};

use crate::error::{Result, SqlError};
use crate::stream::RelationId;
use crate::stream::connector::{ConnectorOptions, Reader, SinkWriter};
use crate::stream::rowcodec::RowCodec;
/// A table's watermark definition and state, kept by the stream layer
/// (source scans advance it too).
pub use crate::stream::watermark::TableWatermark;

/// The database name clients connect to, and DataFusion's catalog name.
pub const DATABASE: &str = "freshet";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelationKind {
    Table,
    MaterializedView,
    View,
    Source,
    /// A dataflow whose changes go to an external system (CREATE SINK).
    Sink,
}

impl RelationKind {
    pub fn noun(self) -> &'static str {
        match self {
            RelationKind::Table => "table",
            RelationKind::MaterializedView => "materialized view",
            RelationKind::View => "view",
            RelationKind::Source => "source",
            RelationKind::Sink => "sink",
        }
    }
}

/// How a relation's rows are kept in the store (`db/storage.rs` reads and
/// writes both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RowLayout {
    /// One key per distinct row (or per primary key), its value the row's
    /// multiplicity: rows can be updated and deleted one by one.
    #[default]
    Rows,
    /// Blocks of rows as they were appended, one key per block (Arrow IPC):
    /// for materialized views whose query only ever inserts rows, written
    /// without reading anything first.
    Blocks,
}

impl RowLayout {
    /// The name of the layout in `WITH (storage_layout = …)`.
    pub fn name(self) -> &'static str {
        match self {
            RowLayout::Rows => "rows",
            RowLayout::Blocks => "blocks",
        }
    }
}

/// A fully qualified relation name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.schema == "public" { f.write_str(&self.name) } else { write!(f, "{}.{}", self.schema, self.name) }
    }
}

/// The definition of one relation: what DDL says about it. What changes
/// while it runs (failure, counters, current watermarks) is the
/// coordinator's (`db::run_state`).
pub struct Relation {
    pub id: RelationId,
    pub name: QualifiedName,
    pub kind: RelationKind,
    /// The schema users see (tables keep their NOT NULL flags).
    pub schema: SchemaRef,
    /// Primary-key column indices (tables only; empty = multiset of rows).
    pub primary_key: Vec<usize>,
    pub column_defaults: BTreeMap<String, Expr>,
    /// Relations this one reads (views), for DROP and for dataflow order.
    pub depends_on: BTreeSet<RelationId>,
    /// The SQL text of a view's query.
    pub definition: Option<String>,
    /// Row-format codecs for the full row and for the primary key.
    pub row_codec: RowCodec,
    pub key_codec: Option<RowCodec>,
    /// How its rows are stored (a materialized view's layout is fixed at
    /// CREATE and kept in its catalog entry).
    pub layout: RowLayout,
    /// A table's or source's `WATERMARK FOR` clause (and a table's
    /// current watermark).
    pub watermark: Option<Arc<TableWatermark>>,
    /// A source's connector (sources have no stored rows: each view reading
    /// one reads it itself).
    pub reader: Option<Reader>,
    /// A source's connector options (a postgres-cdc source's settings, read
    /// by the tables created FROM it).
    pub connector_options: Option<ConnectorOptions>,
    /// A sink's writer.
    pub sink: Option<Arc<dyn SinkWriter>>,
    /// Columns that carry a watermark: a table's watermark column, the
    /// columns of a materialized view derived from its inputs' watermarks.
    pub watermarked: Vec<usize>,
    /// A materialized view declared `EMIT ON WINDOW CLOSE`.
    pub emit_on_window_close: bool,
    /// COMMENT ON text: 0 for the relation, n for its n-th column (as
    /// `pg_description.objsubid` numbers them).
    pub comments: Mutex<BTreeMap<i32, String>>,
}

impl Relation {
    pub fn new(
        id: RelationId,
        name: QualifiedName,
        kind: RelationKind,
        schema: SchemaRef,
        primary_key: Vec<usize>,
    ) -> Result<Self> {
        let row_codec = RowCodec::new(schema.clone())?;
        let key_codec =
            if primary_key.is_empty() { None } else { Some(RowCodec::new(Arc::new(schema.project(&primary_key)?))?) };
        Ok(Self {
            id,
            name,
            kind,
            schema,
            primary_key,
            column_defaults: BTreeMap::new(),
            depends_on: BTreeSet::new(),
            definition: None,
            row_codec,
            key_codec,
            layout: RowLayout::Rows,
            watermark: None,
            reader: None,
            connector_options: None,
            sink: None,
            watermarked: Vec::new(),
            emit_on_window_close: false,
            comments: Mutex::new(BTreeMap::new()),
        })
    }
}

/// All relations by id and by name.
#[derive(Default)]
pub struct Catalog {
    inner: RwLock<CatalogInner>,
    /// Roles, owners and grants.
    pub access: privileges::AccessControl,
}

#[derive(Default)]
struct CatalogInner {
    next_id: RelationId,
    by_id: BTreeMap<RelationId, Arc<Relation>>,
    by_name: BTreeMap<QualifiedName, RelationId>,
}

impl Catalog {
    pub fn allocate_id(&self) -> RelationId {
        let mut inner = self.inner.write();
        inner.next_id += 1;
        inner.next_id
    }

    /// Makes the next [`Catalog::allocate_id`] return `id` (at startup, so
    /// that stored relations come back under their own ids).
    pub fn set_next_id(&self, id: RelationId) {
        self.inner.write().next_id = id.saturating_sub(1);
    }

    pub fn add(&self, relation: Arc<Relation>) -> Result<()> {
        let mut inner = self.inner.write();
        if inner.by_name.contains_key(&relation.name) {
            return Err(SqlError::duplicate_object(&relation.name));
        }
        inner.by_name.insert(relation.name.clone(), relation.id);
        inner.by_id.insert(relation.id, relation);
        Ok(())
    }

    pub fn remove(&self, id: RelationId) {
        let mut inner = self.inner.write();
        if let Some(rel) = inner.by_id.remove(&id) {
            inner.by_name.remove(&rel.name);
        }
    }

    pub fn get(&self, id: RelationId) -> Option<Arc<Relation>> {
        self.inner.read().by_id.get(&id).cloned()
    }

    pub fn by_name(&self, name: &QualifiedName) -> Option<Arc<Relation>> {
        let inner = self.inner.read();
        inner.by_name.get(name).and_then(|id| inner.by_id.get(id)).cloned()
    }

    /// Relations that read `id` directly.
    pub fn dependents(&self, id: RelationId) -> Vec<Arc<Relation>> {
        self.inner.read().by_id.values().filter(|r| r.depends_on.contains(&id)).cloned().collect()
    }

    /// Every relation, in id (creation) order.
    pub fn list_all(&self) -> Vec<Arc<Relation>> {
        self.inner.read().by_id.values().cloned().collect()
    }

    pub fn list(&self, kind: RelationKind) -> Vec<Arc<Relation>> {
        self.inner.read().by_id.values().filter(|r| r.kind == kind).cloned().collect()
    }
}

/// Splits a table reference into schema and name, defaulting to `public`.
pub fn qualify(reference: &TableReference) -> QualifiedName {
    QualifiedName { schema: reference.schema().unwrap_or("public").to_string(), name: reference.table().to_string() }
}
