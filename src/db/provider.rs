//! [`RelationProvider`]: tables and materialized views as DataFusion
//! `TableProvider`s, so ad-hoc SELECTs, pg_catalog and information_schema
//! see them, and UPDATE/DELETE planned by DataFusion land in our writes.
//!
//! Scans read the statement's pinned snapshot (one epoch for the whole
//! statement). Equality filters on leading key columns (a table's primary
//! key; a view's or keyless table's first columns) become a prefix scan of
//! just those keys instead of a full scan.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use super::coordinator::Coordinator;
use super::snapshot::statement_snapshot;
use super::{storage, writes};
use crate::catalog::{Relation, RelationKind};
use crate::error::SqlError;
use crate::stream::rowcodec::RowCodec;

pub struct RelationProvider {
    pub relation: Arc<Relation>,
    coordinator: Arc<Coordinator>,
}

impl std::fmt::Debug for RelationProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelationProvider({})", self.relation.name)
    }
}

impl RelationProvider {
    pub fn new(relation: Arc<Relation>, coordinator: Arc<Coordinator>) -> Self {
        Self { relation, coordinator }
    }

    /// The storage-key prefix fixed by equality filters on the leading key
    /// columns (primary key columns in key order; for relations without a
    /// key, the row's columns in order), if any.
    fn key_prefix(&self, filters: &[Expr]) -> Option<Vec<u8>> {
        let mut pinned: HashMap<usize, ScalarValue> = HashMap::new();
        for filter in filters {
            for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
                if let Some((index, value)) = self.column_equals_literal(conjunct) {
                    pinned.insert(index, value);
                }
            }
        }
        let key_columns: Vec<usize> = if self.relation.primary_key.is_empty() {
            (0..self.relation.schema.fields().len()).collect()
        } else {
            self.relation.primary_key.clone()
        };
        let mut leading = Vec::new();
        let mut arrays = Vec::new();
        for index in key_columns {
            let Some(value) = pinned.get(&index) else {
                break;
            };
            let value = value.cast_to(self.relation.schema.field(index).data_type()).ok()?;
            arrays.push(value.to_array().ok()?);
            leading.push(index);
        }
        if leading.is_empty() {
            return None;
        }
        let codec = RowCodec::new(Arc::new(self.relation.schema.project(&leading).ok()?)).ok()?;
        let rows = codec.encode(&arrays).ok()?;
        Some(rows.row(0).data().to_vec())
    }

    fn column_equals_literal(&self, expr: &Expr) -> Option<(usize, ScalarValue)> {
        let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = expr else {
            return None;
        };
        let (column, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
            _ => return None,
        };
        if value.is_null() {
            return None;
        }
        let index = self.relation.schema.index_of(&column.name).ok()?;
        Some((index, value.clone()))
    }

    /// Compiles DML expressions against the table's columns (unqualified).
    fn physical(&self, state: &dyn Session, expr: &Expr) -> DfResult<Arc<dyn PhysicalExpr>> {
        let expr = expr
            .clone()
            .transform(|e| {
                Ok(match e {
                    Expr::Column(c) if c.relation.is_some() => {
                        Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                    }
                    other => Transformed::no(other),
                })
            })?
            .data;
        let schema = DFSchema::try_from(self.relation.schema.as_ref().clone())?;
        state.create_physical_expr(expr, &schema)
    }

    fn count_result(count: usize) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt64Array::from(vec![count as u64]))])?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None)?)
    }
}

#[async_trait]
impl TableProvider for RelationProvider {
    fn schema(&self) -> SchemaRef {
        self.relation.schema.clone()
    }

    fn table_type(&self) -> TableType {
        match self.relation.kind {
            RelationKind::Table => TableType::Base,
            _ => TableType::View,
        }
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.relation.column_defaults.get(column)
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters only narrow what we read; DataFusion still applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.coordinator
            .run_state(self.relation.id)
            .check_healthy(&self.relation)
            .map_err(SqlError::into_datafusion)?;
        if self.relation.kind == RelationKind::Source {
            return Err(SqlError::not_supported(format!(
                "reading source \"{}\" directly: a source keeps no rows; read it in a materialized view \
                 (CREATE MATERIALIZED VIEW … AS SELECT … FROM {})",
                self.relation.name, self.relation.name
            ))
            .into_datafusion());
        }
        let snapshot = statement_snapshot(self.coordinator.store().as_ref());
        let batch = match self.key_prefix(filters) {
            Some(prefix) => storage::scan_key_prefix(&self.relation, snapshot.as_ref(), &prefix),
            None => storage::scan_all(&self.relation, snapshot.as_ref()),
        }
        .map_err(SqlError::into_datafusion)?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], self.relation.schema.clone(), projection.cloned())?)
    }

    async fn delete_from(&self, state: &dyn Session, filters: Vec<Expr>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let filters = filters.iter().map(|f| self.physical(state, f)).collect::<DfResult<Vec<_>>>()?;
        let count = writes::write(&self.coordinator, |w| writes::delete(w, &self.relation, &filters))
            .await
            .map_err(SqlError::into_datafusion)?;
        Self::count_result(count)
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let filters = filters.iter().map(|f| self.physical(state, f)).collect::<DfResult<Vec<_>>>()?;
        let mut compiled = Vec::with_capacity(assignments.len());
        for (column, expr) in &assignments {
            let index = self.relation.schema.index_of(column).map_err(|_| {
                SqlError::new(
                    crate::error::sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{column}\" of relation \"{}\" does not exist", self.relation.name),
                )
                .into_datafusion()
            })?;
            compiled.push((index, self.physical(state, expr)?));
        }
        let count = writes::write(&self.coordinator, |w| writes::update(w, &self.relation, &compiled, &filters))
            .await
            .map_err(SqlError::into_datafusion)?;
        Self::count_result(count)
    }
}
