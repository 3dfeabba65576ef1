//! Window table functions over event time:
//! `TUMBLE(relation, time_col, size [, offset])`,
//! `HOP(relation, time_col, slide, size [, offset])` and
//! `SESSION(relation, time_col, gap [, key_col …])`.
//!
//! Each returns the relation's rows with two more columns, `window_start`
//! and `window_end`, one row per window the row's time falls in (one for a
//! tumbling or session window, size / slide for a hopping one). They are
//! plain query rewrites: `date_bin(size, time_col, origin)` gives a row's
//! tumbling window, and a hopping window is the union of size / slide
//! shifted tumbling windows of width `slide`. A session (per key: rows less
//! than `gap` apart) is found with window functions: a row starts a session
//! when the previous row of its key (`lag`) is `gap` or more before it, a
//! running sum of those starts numbers the sessions, and min/max over each
//! session give its bounds (`window_end` = last row + gap, as in Flink).
//! So a `GROUP BY window_start` over them is an ordinary incremental
//! aggregate in a materialized view, and the same SQL runs as a batch query
//! (the oracle). A late row that bridges two sessions merges them: their
//! rows are retracted with the old bounds and come back with the new.
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

use crate::catalog::{Catalog, QualifiedName};
use crate::db::coordinator::Coordinator;
use crate::db::provider::RelationProvider;
use crate::error::{SqlError, sqlstate};

type DfResult<T> = datafusion::common::Result<T>;

/// Which window function.
#[derive(Debug, Clone, Copy)]
pub enum WindowKind {
    Tumble,
    Hop,
    Session,
}

impl WindowKind {
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Tumble => "tumble",
            WindowKind::Hop => "hop",
            WindowKind::Session => "session",
        }
    }
    fn usage(self) -> &'static str {
        match self {
            WindowKind::Tumble => "TUMBLE(relation, time_column, size [, offset])",
            WindowKind::Hop => "HOP(relation, time_column, slide, size [, offset])",
            WindowKind::Session => "SESSION(relation, time_column, gap [, key_column, …])",
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

impl WindowFunction {
    fn check_time_column(&self, scan: &LogicalPlan, name: &str) -> DfResult<()> {
        let field = scan
            .schema()
            .field_with_unqualified_name(name)
            .map_err(|_| self.error_with(sqlstate::UNDEFINED_COLUMN, format!("column \"{name}\" does not exist")))?;
        if !matches!(field.data_type(), DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64) {
            return Err(self.error_with(
                sqlstate::DATATYPE_MISMATCH,
                format!("column \"{name}\" is {}, not a timestamp", field.data_type()),
            ));
        }
        Ok(())
    }

    /// `SESSION(relation, time, gap, keys…)` as window functions.
    fn session(&self, exprs: &[Expr]) -> DfResult<Arc<dyn TableProvider>> {
        use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
        use datafusion::functions_aggregate::sum::sum_udaf;
        use datafusion::logical_expr::expr::WindowFunction;
        use datafusion::logical_expr::{ExprFunctionExt, WindowFrame, WindowFrameBound, WindowFrameUnits, when};
        // An aggregate used as a window function.
        let over = |udaf: Arc<datafusion::logical_expr::AggregateUDF>, arg: Expr| {
            Expr::from(WindowFunction::new(udaf, vec![arg]))
        };
        let [relation, time, gap, keys @ ..] = exprs else {
            return Err(self.error_with(sqlstate::UNDEFINED_FUNCTION, format!("{} arguments given", exprs.len())));
        };
        let Expr::Column(time_column) = time else {
            return Err(self.error(format!("the second argument must be a time column, not {time}")));
        };
        let scan = self.relation_scan(relation)?.build()?;
        self.check_time_column(&scan, &time_column.name)?;
        let gap = nanos(self.interval(gap, "gap")?);
        if gap <= 0 {
            return Err(self.error("the gap must be positive"));
        }
        let mut partition = Vec::with_capacity(keys.len());
        for key in keys {
            let Expr::Column(key) = key else {
                return Err(self.error(format!("the keys after the gap must be columns, not {key}")));
            };
            if scan.schema().field_with_unqualified_name(&key.name).is_err() {
                return Err(
                    self.error_with(sqlstate::UNDEFINED_COLUMN, format!("column \"{}\" does not exist", key.name))
                );
            }
            partition.push(col(Column::new_unqualified(&key.name)));
        }
        let columns: Vec<Expr> = scan.schema().columns().into_iter().map(Expr::Column).collect();
        let time = col(Column::new_unqualified(&time_column.name));
        let in_order = vec![time.clone().sort(true, false)];
        // A row starts a session unless its key's previous row is less than
        // `gap` before it.
        let previous = datafusion::functions_window::expr_fn::lag(time.clone(), Some(1), None)
            .partition_by(partition.clone())
            .order_by(in_order.clone())
            .build()?
            .alias("__session_previous");
        let starts = when((col("__session_previous") + interval_lit(gap)).gt(time.clone()), lit(0i64))
            .otherwise(lit(1i64))?
            .alias("__session_starts");
        let running = WindowFrame::new_bounds(
            WindowFrameUnits::Rows,
            WindowFrameBound::Preceding(ScalarValue::UInt64(None)),
            WindowFrameBound::CurrentRow,
        );
        let number = over(sum_udaf(), col("__session_starts"))
            .partition_by(partition.clone())
            .order_by(in_order)
            .window_frame(running)
            .build()?
            .alias("__session");
        let mut session_keys = partition.clone();
        session_keys.push(col("__session"));
        let first = over(min_udaf(), time.clone()).partition_by(session_keys.clone()).build()?.alias("__session_first");
        let last = over(max_udaf(), time).partition_by(session_keys).build()?.alias("__session_last");
        let mut with_starts = columns.clone();
        with_starts.push(starts);
        let mut output = columns;
        output.push(col("__session_first").alias("window_start"));
        output.push((col("__session_last") + interval_lit(gap)).alias("window_end"));
        let plan = LogicalPlanBuilder::from(scan)
            .window(vec![previous])?
            .project(with_starts)?
            .window(vec![number])?
            .window(vec![first, last])?
            .project(output)?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

fn nanos(interval: IntervalMonthDayNano) -> i128 {
    interval.days as i128 * 86_400_000_000_000 + interval.nanoseconds as i128
}

/// A fixed offset added to or taken from a window bound: a duration when
/// it is whole seconds (timestamp minus duration is integer arithmetic on
/// the column's unit, where an interval goes through calendar arithmetic
/// per row: 9% of Nexmark q5's time), else an interval.
fn offset_lit(nanos: i128) -> Expr {
    match i64::try_from(nanos) {
        Ok(nanos) if nanos % 1_000_000_000 == 0 => lit(ScalarValue::DurationNanosecond(Some(nanos))),
        _ => interval_lit(nanos),
    }
}

fn interval_lit(nanos: i128) -> Expr {
    let days = (nanos / 86_400_000_000_000) as i32;
    let rest = (nanos % 86_400_000_000_000) as i64;
    lit(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, days, rest))))
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if let WindowKind::Session = self.kind {
            return self.session(exprs);
        }
        let (relation, time, widths, offset) = match (self.kind, exprs) {
            (WindowKind::Tumble, [r, t, size]) => (r, t, (None, size), None),
            (WindowKind::Tumble, [r, t, size, offset]) => (r, t, (None, size), Some(offset)),
            (WindowKind::Hop, [r, t, slide, size]) => (r, t, (Some(slide), size), None),
            (WindowKind::Hop, [r, t, slide, size, offset]) => (r, t, (Some(slide), size), Some(offset)),
            _ => return Err(self.error_with(sqlstate::UNDEFINED_FUNCTION, format!("{} arguments given", exprs.len()))),
        };
        let Expr::Column(time_column) = time else {
            return Err(self.error(format!("the second argument must be a time column, not {time}")));
        };
        let scan = self.relation_scan(relation)?.build()?;
        self.check_time_column(&scan, &time_column.name)?;
        let (slide, size) = widths;
        let size = self.interval(size, "size")?;
        let slide = match slide {
            Some(slide) => self.interval(slide, "slide")?,
            None => size,
        };
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
            let start = if shift == 0 { pane.clone() } else { pane.clone() - offset_lit(shift * slide_ns) };
            let mut projection = columns.clone();
            projection.push(start.clone().alias("window_start"));
            projection.push((start + offset_lit(size_ns)).alias("window_end"));
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
