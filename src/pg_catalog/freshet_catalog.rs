//! `freshet_catalog`: tables that show what the streaming engine is doing,
//! computed when read.
//!
//! - `freshet_catalog.watermarks`: every table's watermark and every
//!   materialized view column's (as of the last epoch that moved it);
//! - `freshet_catalog.materialized_views`: per materialized view, whether it
//!   emits on window close, how many late changes it dropped, how many rows
//!   its source readers read (since the server started) and whether they
//!   read their sources to the end, its failure, and how its rows are
//!   stored (`rows`, or `blocks` for a query that only inserts);
//! - `freshet_catalog.view_state`: how many keys each view's operators hold
//!   in the store (a scan of the view's state: for watching state size).
//! - `freshet_catalog.source_errors`: the records each reader of a
//!   connector (a view reading a source, a connector-fed table) could not
//!   turn into rows (a dead-letter table: payload, where it came from, and
//!   why), as of the view's last checkpoint or the table's last read.
//! - `freshet_catalog.source_status`: how each such reader's reading goes
//!   (`reading`, `retrying: <error>`, `failed: <error>`).
//! - `freshet_catalog.sinks`: each sink's connector, how delivery goes
//!   (`delivering`, `retrying: …`, `failed: …`, `discarding` for a
//!   blackhole), how many committed epochs wait in its outbox, its failure,
//!   and, as for views, the rows read from its sources and whether they are
//!   all read (`source_rows`, `sources_done`).
//! - `freshet_catalog.storage`: one row: whether the data dir takes
//!   writes, the last committed epoch, and while it is read-only since
//!   when, why, and why the last attempt to write again failed.
//! - `freshet_catalog.lineage`: one row per edge of the dataflow graph,
//!   an object and a relation it reads directly (what feeds a view:
//!   `WHERE object = 'v'`; what a table feeds: `WHERE upstream = 't'`;
//!   transitively with `WITH RECURSIVE`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;

use super::computed_table::{ComputedRows, ComputedTable};
use crate::catalog::{Catalog, RelationKind};
use crate::db::coordinator::Coordinator;
use crate::db::snapshot::statement_snapshot;
use crate::error::{Result, SqlError};

/// The schema's name.
pub const SCHEMA: &str = "freshet_catalog";

#[derive(Clone, Copy, Debug)]
enum Which {
    Watermarks,
    MaterializedViews,
    ViewState,
    SourceErrors,
    SourceStatus,
    Sinks,
    Lineage,
    Storage,
}

struct SystemTable {
    which: Which,
    schema: SchemaRef,
    catalog: Arc<Catalog>,
    coordinator: Arc<Coordinator>,
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SystemTable({:?})", self.which)
    }
}

/// Registers the schema and its tables.
pub fn register(
    ctx: &datafusion::prelude::SessionContext,
    database: &str,
    catalog: Arc<Catalog>,
    coordinator: Arc<Coordinator>,
) -> Result<()> {
    let schemas = ctx.catalog(database).ok_or_else(|| SqlError::internal(format!("catalog {database} is missing")))?;
    let provider = Arc::new(MemorySchemaProvider::new());
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let tables = [
        ("watermarks", Which::Watermarks, vec![text("relation"), text("column_name"), text("watermark")]),
        (
            "materialized_views",
            Which::MaterializedViews,
            vec![
                text("name"),
                Field::new("emit_on_window_close", DataType::Boolean, false),
                Field::new("late_rows", DataType::Int64, false),
                Field::new("source_rows", DataType::Int64, false),
                Field::new("sources_done", DataType::Boolean, false),
                text("failure"),
                text("storage_layout"),
            ],
        ),
        (
            "view_state",
            Which::ViewState,
            vec![
                text("view"),
                Field::new("operator", DataType::Int32, false),
                Field::new("stored_keys", DataType::Int64, false),
            ],
        ),
        (
            "source_errors",
            Which::SourceErrors,
            vec![
                text("relation"),
                text("source"),
                Field::new("partition", DataType::Int32, false),
                Field::new("offset", DataType::Int64, false),
                text("payload"),
                text("error"),
            ],
        ),
        ("source_status", Which::SourceStatus, vec![text("relation"), text("source"), text("status")]),
        (
            "sinks",
            Which::Sinks,
            vec![
                text("name"),
                text("connector"),
                text("status"),
                Field::new("pending_epochs", DataType::Int64, false),
                text("failure"),
                Field::new("source_rows", DataType::Int64, false),
                Field::new("sources_done", DataType::Boolean, false),
            ],
        ),
        ("lineage", Which::Lineage, vec![text("object"), text("object_kind"), text("upstream"), text("upstream_kind")]),
        (
            "storage",
            Which::Storage,
            vec![
                Field::new("writable", DataType::Boolean, false),
                Field::new("committed_epoch", DataType::Int64, false),
                text("read_only_since"),
                text("cause"),
                text("last_attempt"),
            ],
        ),
    ];
    for (name, which, fields) in tables {
        let table = SystemTable {
            which,
            schema: Arc::new(Schema::new(fields)),
            catalog: catalog.clone(),
            coordinator: coordinator.clone(),
        };
        provider.register_table(name.to_string(), Arc::new(ComputedTable(table)))?;
    }
    schemas.register_schema(SCHEMA, provider)?;
    Ok(())
}

/// A watermark as text, with a space between date and time as Postgres
/// prints timestamps.
fn display(value: &ScalarValue) -> String {
    let text = match value.to_array() {
        Ok(array) => array_value_to_string(&array, 0).unwrap_or_else(|_| value.to_string()),
        Err(_) => value.to_string(),
    };
    text.replacen('T', " ", 1)
}

impl SystemTable {
    fn compute(&self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = match self.which {
            Which::Watermarks => {
                let (mut relations, mut columns, mut values) = (Vec::new(), Vec::new(), Vec::new());
                for kind in [RelationKind::Table, RelationKind::MaterializedView] {
                    for relation in self.catalog.list(kind) {
                        if let Some(def) = &relation.watermark {
                            relations.push(relation.name.to_string());
                            columns.push(relation.schema.field(def.column).name().clone());
                            values.push(def.value.lock().as_ref().map(display));
                            continue;
                        }
                        let run = self.coordinator.run_state(relation.id);
                        let current = run.current_watermarks.lock();
                        for &column in &relation.watermarked {
                            relations.push(relation.name.to_string());
                            columns.push(relation.schema.field(column).name().clone());
                            let value = current.get(column).cloned().flatten().and_then(|w| w.after);
                            values.push(value.as_ref().map(display));
                        }
                    }
                }
                vec![
                    Arc::new(StringArray::from(relations)),
                    Arc::new(StringArray::from(columns)),
                    Arc::new(StringArray::from(values)),
                ]
            }
            Which::MaterializedViews => {
                let views = self.catalog.list(RelationKind::MaterializedView);
                let runs: Vec<_> = views.iter().map(|v| self.coordinator.run_state(v.id)).collect();
                vec![
                    Arc::new(StringArray::from_iter_values(views.iter().map(|v| v.name.to_string()))),
                    Arc::new(BooleanArray::from_iter(views.iter().map(|v| Some(v.emit_on_window_close)))),
                    Arc::new(Int64Array::from_iter_values(runs.iter().map(|r| r.stats.late_rows() as i64))),
                    Arc::new(Int64Array::from_iter_values(runs.iter().map(|r| r.stats.source_rows() as i64))),
                    Arc::new(BooleanArray::from_iter(runs.iter().map(|r| Some(r.stats.sources_done())))),
                    Arc::new(StringArray::from_iter(
                        runs.iter().map(|r| r.failure.lock().as_ref().map(|e| e.message.clone())),
                    )),
                    Arc::new(StringArray::from_iter_values(views.iter().map(|v| v.layout.name()))),
                ]
            }
            Which::ViewState => {
                let snapshot = statement_snapshot(self.coordinator.store().as_ref());
                let (mut names, mut operators, mut counts) = (Vec::new(), Vec::new(), Vec::new());
                for view in self.catalog.list(RelationKind::MaterializedView) {
                    let prefix = crate::state::view_state_prefix(view.id);
                    let mut per_operator: std::collections::BTreeMap<u16, i64> = Default::default();
                    snapshot.scan_prefix(&prefix, &mut |key, _| {
                        if let Some(op) = key.get(5..7).and_then(|b| b.try_into().ok()).map(u16::from_be_bytes) {
                            // The counters' key is not operator state.
                            if op != u16::MAX {
                                *per_operator.entry(op).or_default() += 1;
                            }
                        }
                    });
                    for (op, count) in per_operator {
                        names.push(view.name.to_string());
                        operators.push(op as i32);
                        counts.push(count);
                    }
                }
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(Int32Array::from(operators)),
                    Arc::new(Int64Array::from(counts)),
                ]
            }
            Which::SourceErrors => {
                let snapshot = statement_snapshot(self.coordinator.store().as_ref());
                let mut found: Vec<(String, String, crate::connectors::BadRecord)> = Vec::new();
                let readers = self.catalog.list(RelationKind::MaterializedView).into_iter();
                let readers = readers.chain(self.catalog.list(RelationKind::Sink));
                for view in readers.chain(self.catalog.list(RelationKind::Table)) {
                    for (source, prefix) in self.coordinator.run_state(view.id).stats.bad_record_stores() {
                        snapshot.scan_prefix(&prefix, &mut |_, value| {
                            if let Some(record) = crate::stream::connector::decode_bad_record(value) {
                                found.push((view.name.to_string(), source.clone(), record));
                            }
                        });
                    }
                }
                // Stored by hash; shown in stream order.
                found.sort_by(|a, b| {
                    (&a.0, &a.1, a.2.partition, a.2.offset).cmp(&(&b.0, &b.1, b.2.partition, b.2.offset))
                });
                vec![
                    Arc::new(StringArray::from_iter_values(found.iter().map(|f| f.0.as_str()))),
                    Arc::new(StringArray::from_iter_values(found.iter().map(|f| f.1.as_str()))),
                    Arc::new(Int32Array::from_iter_values(found.iter().map(|f| f.2.partition))),
                    Arc::new(Int64Array::from_iter_values(found.iter().map(|f| f.2.offset))),
                    Arc::new(StringArray::from_iter_values(
                        found.iter().map(|f| String::from_utf8_lossy(&f.2.payload).into_owned()),
                    )),
                    Arc::new(StringArray::from_iter_values(found.iter().map(|f| f.2.error.as_str()))),
                ]
            }
            Which::SourceStatus => {
                let (mut views, mut sources, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
                let readers = self.catalog.list(RelationKind::MaterializedView).into_iter();
                for view in readers.chain(self.catalog.list(RelationKind::Table)) {
                    for (source, status) in self.coordinator.run_state(view.id).stats.source_status() {
                        // A sink's own delivery status is in `sinks`.
                        if source == view.name.to_string() && view.kind == RelationKind::Sink {
                            continue;
                        }
                        views.push(view.name.to_string());
                        sources.push(source);
                        statuses.push(status);
                    }
                }
                vec![
                    Arc::new(StringArray::from(views)),
                    Arc::new(StringArray::from(sources)),
                    Arc::new(StringArray::from(statuses)),
                ]
            }
            Which::Lineage => {
                let mut edges: Vec<[String; 4]> = Vec::new();
                for relation in self.catalog.list_all() {
                    for upstream in relation.depends_on.iter().filter_map(|id| self.catalog.get(*id)) {
                        edges.push([
                            relation.name.to_string(),
                            relation.kind.noun().to_string(),
                            upstream.name.to_string(),
                            upstream.kind.noun().to_string(),
                        ]);
                    }
                }
                edges.sort();
                (0..4)
                    .map(|i| {
                        Arc::new(StringArray::from_iter_values(
                            edges.iter().map(|e| e.get(i).cloned().unwrap_or_default()),
                        )) as ArrayRef
                    })
                    .collect()
            }
            Which::Sinks => {
                let snapshot = statement_snapshot(self.coordinator.store().as_ref());
                let mut sinks = self.catalog.list(RelationKind::Sink);
                sinks.sort_by_key(|s| s.id);
                let (mut names, mut connectors, mut statuses, mut pending, mut failures) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let (mut source_rows, mut sources_done) = (Vec::new(), Vec::new());
                for sink in sinks {
                    let name = sink.name.to_string();
                    let mut waiting = 0i64;
                    snapshot.scan_prefix(&crate::state::outbox_prefix(sink.id), &mut |_, _| waiting += 1);
                    let run = self.coordinator.run_state(sink.id);
                    let status = run.stats.source_status().into_iter().find(|(s, _)| *s == name).map(|(_, st)| st);
                    names.push(name);
                    connectors.push(sink.connector_options.as_ref().and_then(|o| o.connector().map(str::to_string)));
                    statuses.push(status.unwrap_or_else(|| "starting".to_string()));
                    pending.push(waiting);
                    failures.push(run.failure.lock().as_ref().map(|e| e.message.clone()));
                    source_rows.push(run.stats.source_rows() as i64);
                    sources_done.push(Some(run.stats.sources_done()));
                }
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(connectors)),
                    Arc::new(StringArray::from(statuses)),
                    Arc::new(Int64Array::from(pending)),
                    Arc::new(StringArray::from(failures)),
                    Arc::new(Int64Array::from(source_rows)),
                    Arc::new(BooleanArray::from(sources_done)),
                ]
            }
            Which::Storage => {
                let status = self.coordinator.health().status();
                let epoch = statement_snapshot(self.coordinator.store().as_ref()).epoch();
                vec![
                    Arc::new(BooleanArray::from(vec![status.is_none()])),
                    Arc::new(Int64Array::from(vec![i64::try_from(epoch).unwrap_or(i64::MAX)])),
                    Arc::new(StringArray::from(vec![
                        status.as_ref().map(|s| crate::db::store_health::format_time(s.since)),
                    ])),
                    Arc::new(StringArray::from(vec![status.as_ref().map(|s| s.cause.message.clone())])),
                    Arc::new(StringArray::from(vec![
                        status.as_ref().and_then(|s| s.last_attempt.as_ref()).map(|e| e.message.clone()),
                    ])),
                ]
            }
        };
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl ComputedRows for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    async fn rows(&self) -> DfResult<RecordBatch> {
        self.compute().map_err(SqlError::into_datafusion)
    }
}
