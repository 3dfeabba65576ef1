//! Window table functions over event time:
//! `TUMBLE(relation, time_col, size [, offset])` and
//! `HOP(relation, time_col, slide, size [, offset])`.
//!
//! Each returns the relation's rows with two more columns, `window_start`
//! and `window_end`, one row per window the row's time falls in (one for a
//! tumbling window, size / slide for a hopping one). They are plain query
//! rewrites: `date_bin(size, time_col, origin)` gives a row's tumbling
//! window, and a hopping window is the union of size / slide shifted
//! tumbling windows of width `slide`. So a `GROUP BY window_start` over them
//! is an ordinary incremental aggregate in a materialized view, and the same
//! SQL runs as a batch query (the oracle).
//!
//! The relation must be a table or materialized view (resolved here, not by
//! DataFusion's async catalog: table functions are planned synchronously).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Column, DataFusionError, ScalarValue, TableReference};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::col;

use crate::catalog::provider::RelationProvider;
use crate::catalog::{Catalog, QualifiedName};
use crate::error::{SqlError, sqlstate};
use crate::stream::coordinator::Coordinator;

type DfResult<T> = datafusion::common::Result<T>;

/// Which window function.
#[derive(Debug, Clone, Copy)]
pub enum WindowKind {
    Tumble,
    Hop,
}

impl WindowKind {
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Tumble => "tumble",
            WindowKind::Hop => "hop",
        }
    }
    fn usage(self) -> &'static str {
        match self {
            WindowKind::Tumble => "TUMBLE(relation, time_column, size [, offset])",
            WindowKind::Hop => "HOP(relation, time_column, slide, size [, offset])",
        }
    }
}

/// Most windows a row may fall in (size / slide of a HOP).
const MAX_WINDOWS_PER_ROW: i64 = 1000;

pub struct WindowFunction {
    kind: WindowKind,
    catalog: Arc<Catalog>,
    coordinator: Arc<Coordinator>,
}

impl std::fmt::Debug for WindowFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowFunction").field("kind", &self.kind).finish()
    }
}

impl WindowFunction {
    pub fn new(kind: WindowKind, catalog: Arc<Catalog>, coordinator: Arc<Coordinator>) -> Self {
        Self { kind, catalog, coordinator }
    }

    /// An error naming the function and its usage; 22023 (invalid parameter
    /// value) unless `code` says otherwise.
    fn error_with(&self, code: &'static str, problem: impl std::fmt::Display) -> DataFusionError {
        let message = format!("{}: {problem}; usage: {}", self.kind.name(), self.kind.usage());
        SqlError::new(code, message).into_datafusion()
    }

    fn error(&self, problem: impl std::fmt::Display) -> DataFusionError {
        self.error_with(sqlstate::INVALID_PARAMETER_VALUE, problem)
    }

    /// The relation named by the first argument (parsed as a column name).
    fn relation_scan(&self, arg: &Expr) -> DfResult<LogicalPlanBuilder> {
        let Expr::Column(Column { relation, name, .. }) = arg else {
            return Err(self.error(format!("the first argument must name a table or materialized view, not {arg}")));
        };
        let schema = match relation {
            Some(TableReference::Bare { table }) => table.to_string(),
            Some(other) => return Err(self.error(format!("relation name {other}.{name} has too many parts"))),
            None => "public".to_string(),
        };
        let qualified = QualifiedName { schema, name: name.clone() };
        let relation =
            self.catalog.by_name(&qualified).ok_or_else(|| SqlError::undefined_table(&qualified).into_datafusion())?;
        let provider = Arc::new(RelationProvider::new(relation, self.coordinator.clone()));
        LogicalPlanBuilder::scan(TableReference::bare(name.clone()), provider_as_source(provider), None)
    }

    /// An interval argument, as a literal (sizes must be constants).
    fn interval(&self, arg: &Expr, what: &str) -> DfResult<IntervalMonthDayNano> {
        let value = match arg {
            Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => *v,
            Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
                IntervalMonthDayNano::new(0, v.days, v.milliseconds as i64 * 1_000_000)
            }
            other => return Err(self.error(format!("the {what} must be an INTERVAL literal, not {other}"))),
        };
        if value.months != 0 {
            return Err(self.error(format!("the {what} must be fixed (days, hours, … — not months or years)")));
        }
        Ok(value)
    }
}

fn nanos(interval: IntervalMonthDayNano) -> i128 {
    interval.days as i128 * 86_400_000_000_000 + interval.nanoseconds as i128
}

fn interval_lit(nanos: i128) -> Expr {
    let days = (nanos / 86_400_000_000_000) as i32;
    let rest = (nanos % 86_400_000_000_000) as i64;
    lit(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, days, rest))))
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let (relation, time, widths, offset) = match (self.kind, exprs) {
            (WindowKind::Tumble, [r, t, size]) => (r, t, vec![size], None),
            (WindowKind::Tumble, [r, t, size, offset]) => (r, t, vec![size], Some(offset)),
            (WindowKind::Hop, [r, t, slide, size]) => (r, t, vec![slide, size], None),
            (WindowKind::Hop, [r, t, slide, size, offset]) => (r, t, vec![slide, size], Some(offset)),
            _ => return Err(self.error_with(sqlstate::UNDEFINED_FUNCTION, format!("{} arguments given", exprs.len()))),
        };
        let Expr::Column(time_column) = time else {
            return Err(self.error(format!("the second argument must be a time column, not {time}")));
        };
        let scan = self.relation_scan(relation)?.build()?;
        let field = scan.schema().field_with_unqualified_name(&time_column.name).map_err(|_| {
            self.error_with(sqlstate::UNDEFINED_COLUMN, format!("column \"{}\" does not exist", time_column.name))
        })?;
        if !matches!(field.data_type(), DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64) {
            return Err(self.error_with(
                sqlstate::DATATYPE_MISMATCH,
                format!("column \"{}\" is {}, not a timestamp", time_column.name, field.data_type()),
            ));
        }
        let size = self.interval(widths[widths.len() - 1], "size")?;
        let slide = if widths.len() == 2 { self.interval(widths[0], "slide")? } else { size };
        let offset = offset.map(|o| self.interval(o, "offset")).transpose()?;
        let (size_ns, slide_ns) = (nanos(size), nanos(slide));
        if size_ns <= 0 || slide_ns <= 0 {
            return Err(self.error("window sizes must be positive"));
        }
        if size_ns % slide_ns != 0 || size_ns / slide_ns > MAX_WINDOWS_PER_ROW as i128 {
            return Err(
                self.error(format!("the size must be a multiple of the slide, at most {MAX_WINDOWS_PER_ROW} times it"))
            );
        }
        // Windows are aligned to the Unix epoch, shifted by the offset.
        let epoch = lit(ScalarValue::TimestampNanosecond(Some(0), None));
        let origin = match offset {
            Some(offset) => epoch + interval_lit(nanos(offset)),
            None => epoch,
        };
        let time = col(Column::new_unqualified(&time_column.name));
        let pane = datafusion::functions::expr_fn::date_bin(interval_lit(slide_ns), time, origin);
        let columns: Vec<Expr> = scan.schema().columns().into_iter().map(Expr::Column).collect();
        let mut plan: Option<LogicalPlan> = None;
        for shift in 0..(size_ns / slide_ns) {
            let start = if shift == 0 { pane.clone() } else { pane.clone() - interval_lit(shift * slide_ns) };
            let mut projection = columns.clone();
            projection.push(start.clone().alias("window_start"));
            projection.push((start + interval_lit(size_ns)).alias("window_end"));
            let shifted = LogicalPlanBuilder::from(scan.clone()).project(projection)?.build()?;
            plan = Some(match plan {
                None => shifted,
                Some(previous) => LogicalPlanBuilder::from(previous).union(shifted)?.build()?,
            });
        }
        let plan = plan.ok_or_else(|| self.error("no window"))?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}
