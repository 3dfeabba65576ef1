//! Lowering: a DataFusion-optimized `LogicalPlan` becomes a dataflow of
//! [`crate::stream`] operators, node by node.
//!
//! Anything that cannot be maintained incrementally is refused here, at
//! CREATE time, with 0A000 and the name of the construct — never a view that
//! is silently wrong. Scalar expressions are compiled with DataFusion into
//! `PhysicalExpr`s, so a view computes exactly what an ad-hoc query would.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, NullEquality};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Distinct, Expr, ExprSchemable, FetchType, JoinType, LogicalPlan, SkipType, SortExpr, TableScan,
};
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Result, SqlError};
use crate::stream::connector::Reader;
use crate::stream::ops::aggregate::{Aggregate, AggregateCall, Windowing};
use crate::stream::ops::constant::Constant;
use crate::stream::ops::event_time::OpenGroups;
use crate::stream::ops::exchange::{Exchange, Feed, Ownership, Routed};
use crate::stream::ops::filter::Filter;
use crate::stream::ops::interval::{ExpiryIndex, TimeBounds};
use crate::stream::ops::join::{Join, JoinKind, JoinSide};
use crate::stream::ops::project::Project;
use crate::stream::ops::scan::Scan;
use crate::stream::ops::source_scan::SourceScan;
use crate::stream::ops::temporal_filter::{self, TemporalFilter};
use crate::stream::ops::topn::TopN;
use crate::stream::ops::union::Union;
use crate::stream::ops::window::{Functions, Ranking, Window};
use crate::stream::rowcodec::RowCodec;
use crate::stream::watermark::{self, Derivation, ViewStats};
use crate::stream::{EpochInput, Operator, RelationId};

mod explain;
#[cfg(test)]
mod harness;
mod interval;
mod subqueries;
pub mod temporal;
mod volatility;

pub use volatility::check_materializable;

/// A lowered view: its root operator and the base relations it reads.
pub struct Lowered {
    pub root: Box<dyn Operator>,
    pub inputs: BTreeSet<RelationId>,
    /// The view's columns that carry a watermark.
    pub watermarked: Vec<usize>,
    /// The view depends on the passing time (temporal filters) or reads
    /// sources: it is stepped in every epoch, and epochs come with the
    /// clock and the sources' data.
    pub clocked: bool,
}

/// A relation a table scan reads (a table, materialized view or source).
pub struct Resolved {
    pub id: RelationId,
    /// Its columns that carry a watermark.
    pub watermarked: Vec<usize>,
    /// A source: the view reads it itself, with its own reader.
    pub source: Option<Arc<crate::catalog::Relation>>,
}

/// Finds the relation a table scan reads.
pub trait RelationResolver {
    fn resolve(&self, scan: &TableScan) -> Result<Resolved>;
}

/// What a view is lowered as.
pub struct ViewSpec {
    pub id: RelationId,
    /// Partitioned stateful operators get this many copies.
    pub workers: usize,
    /// EMIT ON WINDOW CLOSE: windowed aggregates emit each window once, final.
    pub emit_on_window_close: bool,
    /// Where the operators count late rows.
    pub stats: Arc<ViewStats>,
}

/// Lowers `plan` into the dataflow of a view; stateful operators are
/// partitioned over the view's workers and keep their state under keys
/// numbered in lowering order (so the same statement always gets the same
/// keys).
pub fn lower(
    plan: &LogicalPlan,
    state: &SessionState,
    resolver: &dyn RelationResolver,
    view: &ViewSpec,
) -> Result<Lowered> {
    lower_traced(plan, state, resolver, view, None)
}

/// EXPLAIN of a materialized view: the lines describing the dataflow
/// `lower` would build (see `explain`), and the relations it reads.
pub fn explain(
    plan: &LogicalPlan,
    state: &SessionState,
    resolver: &dyn RelationResolver,
    view: &ViewSpec,
) -> Result<(Vec<String>, BTreeSet<RelationId>)> {
    let trace = std::cell::RefCell::new(explain::Trace::default());
    let lowered = lower_traced(plan, state, resolver, view, Some(&trace))?;
    Ok((trace.borrow().render(view.workers.max(1)), lowered.inputs))
}

fn lower_traced(
    plan: &LogicalPlan,
    state: &SessionState,
    resolver: &dyn RelationResolver,
    view: &ViewSpec,
    trace: Option<&std::cell::RefCell<explain::Trace>>,
) -> Result<Lowered> {
    let plan = subqueries::scalar_subqueries_to_joins(plan.clone())?;
    let mut lowering = Lowering {
        state,
        resolver,
        inputs: BTreeSet::new(),
        workers: view.workers.max(1),
        view: view.id,
        next_operator: 0,
        emit_on_window_close: view.emit_on_window_close,
        stats: view.stats.clone(),
        windowed_aggregates: 0,
        clocked: false,
        trace,
    };
    let root = lowering.lower(&plan)?;
    if view.emit_on_window_close && lowering.windowed_aggregates == 0 {
        return Err(SqlError::not_supported(
            "EMIT ON WINDOW CLOSE on a query without a windowed aggregate: it needs a GROUP BY on a column \
             with a watermark, e.g. window_start of TUMBLE over a table with WATERMARK FOR",
        ));
    }
    let watermarked = root
        .watermarks(&EpochInput::probe())?
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.is_some().then_some(i))
        .collect();
    Ok(Lowered { root, inputs: lowering.inputs, watermarked, clocked: lowering.clocked })
}

/// Column `index` of `schema`, as a column reference.
fn column_of(schema: &DFSchema, index: usize) -> Result<datafusion::common::Column> {
    schema
        .columns()
        .into_iter()
        .nth(index)
        .ok_or_else(|| SqlError::internal(format!("the schema has no column {index}")))
}

/// The arrow schema of a plan node, every field nullable: outer joins and
/// aggregates over empty input produce NULLs where a base column had none.
pub fn stream_schema(schema: &DFSchema) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    Arc::new(Schema::new(fields))
}

struct Lowering<'a> {
    state: &'a SessionState,
    resolver: &'a dyn RelationResolver,
    inputs: BTreeSet<RelationId>,
    workers: usize,
    view: RelationId,
    /// Number of the next stateful operator (its state key prefix).
    next_operator: u16,
    emit_on_window_close: bool,
    stats: Arc<ViewStats>,
    /// Aggregates grouped by a watermarked column.
    windowed_aggregates: usize,
    /// A temporal filter was lowered.
    clocked: bool,
    /// EXPLAIN: what is lowered, node by node.
    trace: Option<&'a std::cell::RefCell<explain::Trace>>,
}

/// What [`Lowering::join_time`] found.
struct JoinTime {
    bounds: interval::Bounds,
    left_expiry: Option<Derivation>,
    right_expiry: Option<Derivation>,
}

/// An input of a stateful operator and the key its rows are routed by.
struct KeyedInput {
    op: Box<dyn Operator>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_types: Vec<DataType>,
}

fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::not_supported(format!("{what} is not supported in a materialized view"))
}

impl Lowering<'_> {
    /// The state key prefix of the next stateful operator.
    fn state_prefix(&mut self) -> Result<[u8; 7]> {
        let number = self.next_operator;
        self.next_operator =
            number.checked_add(1).ok_or_else(|| unsupported("a query with more than 65535 stateful operators"))?;
        if let Some(trace) = self.trace {
            trace.borrow_mut().stateful(number);
        }
        Ok(crate::state::operator_prefix(self.view, number))
    }

    fn expr(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        if temporal::reads_now(expr) {
            return Err(unsupported(format!(
                "function now() can be used in a materialized view only in a WHERE comparison of a row's value with \
                 now() plus or minus a constant (a temporal filter), not in {expr}"
            )));
        }
        if expr.is_volatile() {
            return Err(unsupported(format!("the volatile expression {expr}")));
        }
        self.state.create_physical_expr(expr.clone(), schema).map_err(|e| {
            let err = SqlError::from(e);
            if err.code == crate::error::sqlstate::INTERNAL_ERROR {
                unsupported(format!("the expression {expr}"))
            } else {
                err
            }
        })
    }

    fn exprs(&self, exprs: &[Expr], schema: &DFSchema) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        exprs.iter().map(|e| self.expr(e, schema)).collect()
    }

    fn lower(&mut self, plan: &LogicalPlan) -> Result<Box<dyn Operator>> {
        let Some(trace) = self.trace else { return self.lower_node(plan) };
        trace.borrow_mut().enter(plan);
        let lowered = self.lower_node(plan);
        trace.borrow_mut().exit();
        lowered
    }

    fn lower_node(&mut self, plan: &LogicalPlan) -> Result<Box<dyn Operator>> {
        Ok(match plan {
            LogicalPlan::Projection(p) => {
                let input = self.lower(&p.input)?;
                let exprs = self.exprs(&p.expr, p.input.schema())?;
                let monotone: Vec<Option<usize>> =
                    p.expr.iter().map(|e| watermark::monotone_column(e, p.input.schema())).collect();
                Box::new(Project::new(input, exprs, &monotone, stream_schema(&p.schema)))
            }
            LogicalPlan::Filter(f) => {
                let mut op = self.lower(&f.input)?;
                // Comparisons with now() become temporal filters, above the rest.
                let (timed, plain): (Vec<&Expr>, Vec<&Expr>) =
                    datafusion::logical_expr::utils::split_conjunction(&f.predicate)
                        .into_iter()
                        .partition(|c| temporal::reads_now(c));
                if let Some(predicate) = datafusion::logical_expr::utils::conjunction(plain.into_iter().cloned()) {
                    op = Box::new(Filter::new(op, self.expr(&predicate, f.input.schema())?));
                }
                for conjunct in timed {
                    let timed = temporal::temporal_conjunct(conjunct)?;
                    let value = self.expr(&timed.value, f.input.schema())?;
                    let now_schema = DFSchema::try_from(temporal_filter::now_schema().as_ref().clone())?;
                    let threshold = self.state.create_physical_expr(timed.threshold, &now_schema)?;
                    let state = self.state_prefix()?;
                    op = Box::new(TemporalFilter::new(op, value, threshold, timed.comparison, &state)?);
                    self.clocked = true;
                }
                op
            }
            LogicalPlan::TableScan(scan) => {
                if scan.fetch.is_some() {
                    return Err(unsupported("LIMIT without ORDER BY"));
                }
                let relation = self.resolver.resolve(scan)?;
                if let Some(source) = &relation.source {
                    let reader = match source.reader.clone() {
                        Some(Reader::Appends(reader)) => reader,
                        Some(Reader::Keyed(_)) => {
                            return Err(SqlError::new(
                                crate::error::sqlstate::WRONG_OBJECT_TYPE,
                                format!(
                                    "source {} yields changes by key, which only a table can apply: read it \
                                     through a table (CREATE TABLE t (…) FROM {} TABLE 'schema.table')",
                                    source.name, source.name
                                ),
                            ));
                        }
                        None => return Err(SqlError::internal(format!("source {} has no reader", source.name))),
                    };
                    let state = self.state_prefix()?;
                    self.clocked = true;
                    return Ok(Box::new(SourceScan::new(
                        &source.name.to_string(),
                        reader,
                        scan.projection.clone(),
                        source.watermark.clone(),
                        stream_schema(&scan.projected_schema),
                        &state,
                        self.stats.clone(),
                    )));
                }
                self.inputs.insert(relation.id);
                Box::new(Scan::new(
                    relation.id,
                    scan.projection.clone(),
                    &relation.watermarked,
                    stream_schema(&scan.projected_schema),
                ))
            }
            LogicalPlan::SubqueryAlias(alias) => self.lower(&alias.input)?,
            LogicalPlan::Aggregate(agg) => {
                if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
                    return Err(unsupported("GROUPING SETS / ROLLUP / CUBE"));
                }
                let input = self.lower(&agg.input)?;
                let input_schema = agg.input.schema();
                let group_exprs = self.exprs(&agg.group_expr, input_schema)?;
                let physical_input = input_schema.as_arrow();
                let calls = agg
                    .aggr_expr
                    .iter()
                    .map(|e| {
                        #[allow(deprecated)]
                        let (function, filter, _) =
                            datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                                e,
                                input_schema,
                                physical_input,
                                self.state.execution_props(),
                            )?;
                        Ok(AggregateCall::new(function, filter))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let schema = stream_schema(&agg.schema);
                let key_types = agg
                    .group_expr
                    .iter()
                    .map(|e| e.get_type(input_schema))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                // A group-key column with a watermark makes groups close.
                let input_watermarks = input.watermarks(&EpochInput::probe())?;
                let monotone: Vec<Option<usize>> =
                    agg.group_expr.iter().map(|e| watermark::monotone_column(e, input_schema)).collect();
                let time_column = monotone
                    .iter()
                    .position(|m| m.is_some_and(|c| input_watermarks.get(c).is_some_and(Option::is_some)));
                if time_column.is_some() {
                    self.windowed_aggregates += 1;
                } else if self.emit_on_window_close {
                    return Err(SqlError::not_supported(format!(
                        "EMIT ON WINDOW CLOSE with a GROUP BY on no watermarked column ({}): every aggregate must \
                         group by a window (or other column with a watermark)",
                        if agg.group_expr.is_empty() {
                            "a global aggregate".to_string()
                        } else {
                            agg.group_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
                        }
                    )));
                }
                let key_watermarks = Derivation::new(input.schema(), &group_exprs, &monotone);
                let emit_on_close = self.emit_on_window_close;
                let stats = self.stats.clone();
                let keyed = KeyedInput { op: input, keys: group_exprs.clone(), key_types };
                let state = self.state_prefix()?;
                self.partitioned(vec![keyed], schema.clone(), |mut feeds, ownership| {
                    let windowing = match time_column {
                        Some(column) => Some(Windowing {
                            open: OpenGroups::new(column, schema.field(column), ownership, stats.clone())?,
                            emit_on_close,
                        }),
                        None => None,
                    };
                    Ok(Box::new(Aggregate::new(
                        feeds.remove(0),
                        group_exprs.clone(),
                        calls.clone(),
                        schema.clone(),
                        &state,
                        key_watermarks.clone(),
                        windowing,
                    )?))
                })?
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let schema = input.schema().clone();
                let op = self.lower(input)?;
                let columns: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
                let group_exprs = self.exprs(&columns, &schema)?;
                let key_types = schema.fields().iter().map(|f| f.data_type().clone()).collect();
                let output = stream_schema(&schema);
                let keyed = KeyedInput { op, keys: group_exprs.clone(), key_types };
                let state = self.state_prefix()?;
                let no_watermarks = Derivation::new(output.clone(), &[], &[]);
                self.partitioned(vec![keyed], output.clone(), |mut feeds, _| {
                    Ok(Box::new(Aggregate::new(
                        feeds.remove(0),
                        group_exprs.clone(),
                        vec![],
                        output.clone(),
                        &state,
                        no_watermarks.clone(),
                        None,
                    )?))
                })?
            }
            LogicalPlan::Distinct(Distinct::On(_)) => return Err(unsupported("DISTINCT ON")),
            LogicalPlan::Join(join) => {
                if join.null_equality == NullEquality::NullEqualsNull {
                    return Err(unsupported("a join on IS NOT DISTINCT FROM"));
                }
                let kind = match join.join_type {
                    JoinType::Inner => JoinKind::Inner,
                    JoinType::Left => JoinKind::Left,
                    JoinType::Right => JoinKind::Right,
                    JoinType::Full => JoinKind::Full,
                    JoinType::LeftSemi => JoinKind::LeftSemi,
                    JoinType::LeftAnti => JoinKind::LeftAnti,
                    JoinType::RightSemi => JoinKind::RightSemi,
                    JoinType::RightAnti => JoinKind::RightAnti,
                    other => {
                        return Err(unsupported(format!(
                            "a {other} join (e.g. EXISTS under OR, or NOT IN over nullable values)"
                        )));
                    }
                };
                if join.null_aware {
                    return Err(unsupported("NOT IN over a subquery whose values may be NULL (use NOT EXISTS)"));
                }
                let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
                let left_key_exprs = self.exprs(&left_keys, join.left.schema())?;
                let right_key_exprs = self.exprs(&right_keys, join.right.schema())?;
                let key_schema = if left_keys.is_empty() {
                    None
                } else {
                    let fields = left_keys
                        .iter()
                        .zip(&right_keys)
                        .enumerate()
                        .map(|(i, (l, r))| {
                            let lt = l.get_type(join.left.schema())?;
                            let rt = r.get_type(join.right.schema())?;
                            let ty = if lt == rt {
                                lt
                            } else {
                                datafusion::logical_expr::type_coercion::binary::comparison_coercion(&lt, &rt)
                                    .ok_or_else(|| {
                                        SqlError::new(
                                            crate::error::sqlstate::DATATYPE_MISMATCH,
                                            format!("cannot join {lt} with {rt}"),
                                        )
                                    })?
                            };
                            Ok(Field::new(format!("k{i}"), ty, true))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Some(Arc::new(Schema::new(fields)))
                };
                let joined = join.left.schema().join(join.right.schema())?;
                let filter = join.filter.as_ref().map(|f| self.expr(f, &joined)).transpose()?;
                let (joined_schema, schema) = (stream_schema(&joined), stream_schema(&join.schema));
                let key_types: Vec<DataType> = key_schema
                    .as_ref()
                    .map(|k| k.fields().iter().map(|f| f.data_type().clone()).collect())
                    .unwrap_or_default();
                let left_op = self.lower(&join.left)?;
                let right_op = self.lower(&join.right)?;
                let time = if kind == JoinKind::Inner {
                    self.join_time(join, left_op.as_ref(), right_op.as_ref())?
                } else {
                    None
                };
                let left = KeyedInput { op: left_op, keys: left_key_exprs.clone(), key_types: key_types.clone() };
                let right = KeyedInput { op: right_op, keys: right_key_exprs.clone(), key_types };
                let state = self.state_prefix()?;
                let stats = self.stats.clone();
                self.partitioned(vec![left, right], schema.clone(), |mut feeds, ownership| {
                    let right_feed = feeds.remove(1);
                    let left_feed = feeds.remove(0);
                    let (left_schema, right_schema) = (left_feed.schema(), right_feed.schema());
                    let join = Join::new(
                        JoinSide::new(left_feed, left_key_exprs.clone(), &[&state[..], &[0]].concat())?,
                        JoinSide::new(right_feed, right_key_exprs.clone(), &[&state[..], &[1]].concat())?,
                        kind,
                        key_schema.clone(),
                        filter.clone(),
                        joined_schema.clone(),
                        schema.clone(),
                    )?;
                    Ok(Box::new(match &time {
                        Some(t) => join.with_time_bounds(TimeBounds {
                            left_expiry: t.left_expiry.clone(),
                            right_expiry: t.right_expiry.clone(),
                            left: ExpiryIndex::new(t.bounds.left_column, &left_schema)?,
                            right: ExpiryIndex::new(t.bounds.right_column, &right_schema)?,
                            ownership,
                            stats: stats.clone(),
                        }),
                        None => join,
                    }))
                })?
            }
            LogicalPlan::Union(union) => {
                let inputs = union.inputs.iter().map(|i| self.lower(i)).collect::<Result<Vec<_>>>()?;
                Box::new(Union::new(inputs, stream_schema(&union.schema)))
            }
            LogicalPlan::Sort(sort) => match sort.fetch {
                Some(fetch) => self.top_n(&sort.input, &sort.expr, 0, fetch)?,
                // Rows of a view have no order; ORDER BY alone changes nothing.
                None => self.lower(&sort.input)?,
            },
            LogicalPlan::Limit(limit) => {
                let skip = match limit.get_skip_type()? {
                    SkipType::Literal(n) => n,
                    SkipType::UnsupportedExpr => return Err(unsupported("a non-constant OFFSET")),
                };
                let fetch = match limit.get_fetch_type()? {
                    FetchType::Literal(n) => n.unwrap_or(usize::MAX),
                    FetchType::UnsupportedExpr => return Err(unsupported("a non-constant LIMIT")),
                };
                match limit.input.as_ref() {
                    LogicalPlan::Sort(sort) => {
                        let fetch = sort.fetch.map_or(fetch, |f| f.saturating_sub(skip).min(fetch));
                        self.top_n(&sort.input, &sort.expr, skip, fetch)?
                    }
                    _ => return Err(unsupported("LIMIT/OFFSET without ORDER BY")),
                }
            }
            LogicalPlan::EmptyRelation(empty) => {
                let schema = stream_schema(&empty.schema);
                let rows = if empty.produce_one_row { 1 } else { 0 };
                let options = RecordBatchOptions::new().with_row_count(Some(rows));
                Box::new(Constant::new(RecordBatch::try_new_with_options(schema, vec![], &options)?))
            }
            LogicalPlan::Values(values) => Box::new(Constant::new(self.values(values)?)),
            LogicalPlan::Window(window) => self.window(window)?,
            LogicalPlan::RecursiveQuery(_) => return Err(unsupported("WITH RECURSIVE")),
            LogicalPlan::Unnest(_) => return Err(unsupported("UNNEST")),
            other => return Err(unsupported(format!("the plan node {}", other.display()))),
        })
    }

    fn top_n(
        &mut self,
        input: &LogicalPlan,
        sort: &[SortExpr],
        skip: usize,
        fetch: usize,
    ) -> Result<Box<dyn Operator>> {
        let op = self.lower(input)?;
        let (physical, codec) = self.sort_codec(sort, input.schema())?;
        let state = self.state_prefix()?;
        Ok(Box::new(TopN::new(op, physical, codec, skip, fetch, &state)?))
    }

    /// Window functions sharing one PARTITION BY / ORDER BY: ranks counted
    /// by the operator, anything else evaluated by DataFusion per partition.
    fn window(&mut self, window: &datafusion::logical_expr::Window) -> Result<Box<dyn Operator>> {
        let mut rankings = Vec::new();
        let mut shape: Option<(Vec<Expr>, Vec<SortExpr>)> = None;
        let mut only_ranks = true;
        for expr in &window.window_expr {
            let Expr::WindowFunction(function) = expr.clone().unalias() else {
                return Err(unsupported(format!("the window expression {expr}")));
            };
            let name = function.fun.name().to_ascii_lowercase();
            match name.as_str() {
                "row_number" => rankings.push(Ranking::RowNumber),
                "rank" => rankings.push(Ranking::Rank),
                "dense_rank" => rankings.push(Ranking::DenseRank),
                _ => only_ranks = false,
            }
            let this = (function.params.partition_by.clone(), function.params.order_by.clone());
            match &shape {
                Some(existing) if *existing != this => {
                    return Err(unsupported("window functions with different PARTITION BY / ORDER BY in one query"));
                }
                _ => shape = Some(this),
            }
        }
        let functions = if only_ranks {
            Functions::Ranking(rankings)
        } else {
            let context = datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default();
            let functions = window
                .window_expr
                .iter()
                .map(|e| {
                    datafusion::physical_planner::create_window_expr(
                        e,
                        window.input.schema(),
                        self.state.execution_props(),
                        &context,
                    )
                    .map_err(|error| {
                        let error = SqlError::from(error);
                        if error.code == crate::error::sqlstate::INTERNAL_ERROR {
                            unsupported(format!("the window expression {e}"))
                        } else {
                            error
                        }
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Functions::General { functions }
        };
        let (partition_by, order_by) = shape.unwrap_or_default();
        let input_schema = window.input.schema();
        let input = self.lower(&window.input)?;
        let state = self.state_prefix()?;
        let partition_exprs = self.exprs(&partition_by, input_schema)?;
        let partition_codec = || -> Result<Option<RowCodec>> {
            if partition_by.is_empty() {
                return Ok(None);
            }
            let fields = partition_by
                .iter()
                .enumerate()
                .map(|(i, e)| Ok(Field::new(format!("p{i}"), e.get_type(input_schema)?, true)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(RowCodec::new(Arc::new(Schema::new(fields)))?))
        };
        let order = || -> Result<(Vec<Arc<dyn PhysicalExpr>>, Option<RowCodec>)> {
            if order_by.is_empty() {
                return Ok((Vec::new(), None));
            }
            let (exprs, codec) = self.sort_codec(&order_by, input_schema)?;
            Ok((exprs, Some(codec)))
        };
        let schema = stream_schema(&window.schema);
        let key_types =
            partition_by.iter().map(|e| e.get_type(input_schema)).collect::<datafusion::error::Result<Vec<_>>>()?;
        let keyed = KeyedInput { op: input, keys: partition_exprs.clone(), key_types };
        self.partitioned(vec![keyed], schema.clone(), |mut feeds, _| {
            Ok(Box::new(Window::new(
                feeds.remove(0),
                (partition_exprs.clone(), partition_codec()?),
                order()?,
                functions.clone(),
                schema.clone(),
                &state,
            )?))
        })
    }

    /// The time bounds of an inner join between watermarked columns, with
    /// the thresholds below which each side's rows can meet no future row.
    fn join_time(
        &self,
        join: &datafusion::logical_expr::Join,
        left: &dyn Operator,
        right: &dyn Operator,
    ) -> Result<Option<JoinTime>> {
        let probe = EpochInput::probe();
        let watermarked = |op: &dyn Operator| -> Result<Vec<bool>> {
            Ok(op.watermarks(&probe)?.iter().map(Option::is_some).collect())
        };
        let Some(bounds) = interval::time_bounds(join, &watermarked(left)?, &watermarked(right)?) else {
            return Ok(None);
        };
        let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
        // Left rows leave below `right watermark - hi`, right rows below
        // `left watermark + lo`.
        let left_expiry = match bounds.hi {
            Some(hi) => {
                let column = Expr::Column(column_of(right_schema, bounds.right_column)?);
                let threshold = self.expr(&(column - interval::interval(hi)), right_schema)?;
                Some(Derivation::new(right.schema(), &[threshold], &[Some(bounds.right_column)]))
            }
            None => None,
        };
        let right_expiry = match bounds.lo {
            Some(lo) => {
                let column = Expr::Column(column_of(left_schema, bounds.left_column)?);
                let threshold = self.expr(&(column + interval::interval(lo)), left_schema)?;
                Some(Derivation::new(left.schema(), &[threshold], &[Some(bounds.left_column)]))
            }
            None => None,
        };
        Ok(Some(JoinTime { bounds, left_expiry, right_expiry }))
    }

    /// A stateful operator over key-routed inputs: one copy per worker behind
    /// an exchange, or (one worker, or no key to route by) a single copy.
    /// `build` gets a copy's inputs and which keys it owns.
    fn partitioned(
        &self,
        inputs: Vec<KeyedInput>,
        schema: SchemaRef,
        build: impl Fn(Vec<Box<dyn Operator>>, Ownership) -> Result<Box<dyn Operator>>,
    ) -> Result<Box<dyn Operator>> {
        if self.workers == 1 || inputs.iter().any(|i| i.keys.is_empty()) {
            return build(inputs.into_iter().map(|i| i.op).collect(), Ownership::all());
        }
        if let Some(trace) = self.trace {
            trace.borrow_mut().partitioned();
        }
        let key_types = inputs.first().map(|input| input.key_types.clone()).unwrap_or_default();
        let mut routed = Vec::with_capacity(inputs.len());
        let mut feeds_by_input: Vec<std::vec::IntoIter<Feed>> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (r, feeds) = Routed::new(input.op, input.keys, input.key_types, self.workers);
            routed.push(r);
            feeds_by_input.push(feeds.into_iter());
        }
        let mut workers = Vec::with_capacity(self.workers);
        for worker in 0..self.workers {
            let feeds: Vec<Box<dyn Operator>> =
                feeds_by_input.iter_mut().filter_map(|f| f.next()).map(|f| Box::new(f) as Box<dyn Operator>).collect();
            let ownership = Ownership { worker, workers: self.workers, key_types: key_types.clone() };
            workers.push(build(feeds, ownership)?);
        }
        Ok(Box::new(Exchange::new(routed, workers, schema)))
    }

    /// Physical sort expressions and the codec that orders by them.
    fn sort_codec(&self, sort: &[SortExpr], schema: &DFSchema) -> Result<(Vec<Arc<dyn PhysicalExpr>>, RowCodec)> {
        let exprs: Vec<Expr> = sort.iter().map(|s| s.expr.clone()).collect();
        let physical = self.exprs(&exprs, schema)?;
        let fields = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| Ok(Field::new(format!("s{i}"), e.get_type(schema)?, true)))
            .collect::<Result<Vec<_>>>()?;
        let options: Vec<SortOptions> =
            sort.iter().map(|s| SortOptions { descending: !s.asc, nulls_first: s.nulls_first }).collect();
        Ok((physical, RowCodec::with_options(Arc::new(Schema::new(fields)), &options)?))
    }

    /// Evaluates a VALUES list (constants) into a batch.
    fn values(&self, values: &datafusion::logical_expr::Values) -> Result<RecordBatch> {
        let schema = stream_schema(&values.schema);
        let empty = DFSchema::empty();
        let one_row = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (c, field) in schema.fields().iter().enumerate() {
            let mut parts = Vec::with_capacity(values.values.len());
            for row in &values.values {
                let cell = row.get(c).ok_or_else(|| SqlError::internal("a VALUES row narrower than its schema"))?;
                let array = self.expr(cell, &empty)?.evaluate(&one_row)?.into_array(1)?;
                parts.push(datafusion::arrow::compute::cast(&array, field.data_type())?);
            }
            let refs: Vec<&dyn datafusion::arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
            columns.push(datafusion::arrow::compute::concat(&refs)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(values.values.len()));
        Ok(RecordBatch::try_new_with_options(schema, columns, &options)?)
    }
}
