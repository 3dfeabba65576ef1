//! A table whose rows are computed each time it is scanned: the system
//! catalogs (`pg_catalog`'s own tables, `freshet_catalog`) answer from the
//! catalog and the coordinator as they are at the query, not from stored
//! rows. Each implements [`ComputedRows`]; [`ComputedTable`] makes it a
//! DataFusion `TableProvider` (a view, scanned as one in-memory batch).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// The rows of a computed table, as of now.
#[async_trait]
pub trait ComputedRows: std::fmt::Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    async fn rows(&self) -> DfResult<RecordBatch>;
}

/// A [`ComputedRows`] as a table DataFusion can scan.
#[derive(Debug)]
pub struct ComputedTable<T>(pub T);

#[async_trait]
impl<T: ComputedRows> TableProvider for ComputedTable<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.0.rows().await?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?)
    }
}
