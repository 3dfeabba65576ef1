//! Joins ([`crate::stream::ops::join::Join`]): inner, outer, semi and anti
//! joins on equality keys, with a residual filter. An inner join between
//! watermarked columns bounded in time (an interval or window join, see
//! `plan/interval.rs`) drops rows that can meet no future row; an outer,
//! semi or anti join does so only when its rows meet rows of the same time
//! (a window join), see `stream/ops/interval.rs`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, NullEquality};
use datafusion::logical_expr::{Expr, ExprSchemable, JoinType, LogicalPlan};
use datafusion::physical_plan::PhysicalExpr;

use super::BuildContext;
use super::{KeyRoute, Kind, Node};
use crate::error::{Result, SqlError};
use crate::plan::interval;
use crate::plan::lowering::{Lowering, unsupported};
use crate::plan::stream_schema;
use crate::stream::Operator;
use crate::stream::ops::exchange::Ownership;
use crate::stream::ops::interval::{ExpiryIndex, TimeBounds};
use crate::stream::ops::join::{Join, JoinKind, JoinSide};
use crate::stream::watermark::Derivation;

#[derive(Clone)]
pub struct JoinNode {
    pub join_kind: JoinKind,
    /// The left and the right side's keys, in that order.
    pub routes: Vec<KeyRoute>,
    /// The keys as compared (each pair coerced to a common type); `None`
    /// for a join without equality keys.
    pub key_schema: Option<SchemaRef>,
    /// The residual condition, over the left and right columns together.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The left columns followed by the right ones.
    pub joined_schema: SchemaRef,
    pub time: Option<JoinTime>,
    pub state: u16,
}

/// The time bounds of an inner join between watermarked columns, with the
/// thresholds below which each side's rows can meet no future row.
#[derive(Clone)]
pub struct JoinTime {
    pub left_column: usize,
    pub right_column: usize,
    /// Left rows leave below `right watermark - hi`.
    pub left_expiry: Option<Derivation>,
    /// Right rows leave below `left watermark + lo`.
    pub right_expiry: Option<Derivation>,
}

fn kind_of(join: &datafusion::logical_expr::Join) -> Result<JoinKind> {
    Ok(match join.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        JoinType::LeftSemi => JoinKind::LeftSemi,
        JoinType::LeftAnti => JoinKind::LeftAnti,
        JoinType::RightSemi => JoinKind::RightSemi,
        JoinType::RightAnti => JoinKind::RightAnti,
        other => {
            return Err(unsupported(format!("a {other} join (e.g. EXISTS under OR, or NOT IN over nullable values)")));
        }
    })
}

/// The type each key pair is compared as.
fn key_schema(
    join: &datafusion::logical_expr::Join,
    left_keys: &[Expr],
    right_keys: &[Expr],
) -> Result<Option<SchemaRef>> {
    if left_keys.is_empty() {
        return Ok(None);
    }
    let fields = left_keys
        .iter()
        .zip(right_keys)
        .enumerate()
        .map(|(i, (l, r))| {
            let lt = l.get_type(join.left.schema())?;
            let rt = r.get_type(join.right.schema())?;
            let ty = if lt == rt {
                lt
            } else {
                datafusion::logical_expr::type_coercion::binary::comparison_coercion(&lt, &rt).ok_or_else(|| {
                    SqlError::new(crate::error::sqlstate::DATATYPE_MISMATCH, format!("cannot join {lt} with {rt}"))
                })?
            };
            Ok(Field::new(format!("k{i}"), ty, true))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Arc::new(Schema::new(fields))))
}

pub(in crate::plan) fn lower(
    lowering: &mut Lowering,
    join: &datafusion::logical_expr::Join,
    left: Node,
    right: Node,
) -> Result<Node> {
    if join.null_equality == NullEquality::NullEqualsNull {
        return Err(unsupported("a join on IS NOT DISTINCT FROM"));
    }
    let join_kind = kind_of(join)?;
    if join.null_aware {
        return Err(unsupported("NOT IN over a subquery whose values may be NULL (use NOT EXISTS)"));
    }
    let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = join.on.iter().cloned().unzip();
    let left_key_exprs = lowering.exprs(&left_keys, join.left.schema())?;
    let right_key_exprs = lowering.exprs(&right_keys, join.right.schema())?;
    let key_schema = key_schema(join, &left_keys, &right_keys)?;
    let joined = join.left.schema().join(join.right.schema())?;
    let filter = join.filter.as_ref().map(|f| lowering.expr(f, &joined)).transpose()?;
    let (joined_schema, schema) = (stream_schema(&joined), stream_schema(&join.schema));
    let key_types: Vec<DataType> =
        key_schema.as_ref().map(|k| k.fields().iter().map(|f| f.data_type().clone()).collect()).unwrap_or_default();
    let time = join_time(lowering, join, &left, &right, join_kind != JoinKind::Inner)?;
    let mut watermarked = vec![false; schema.fields().len()];
    // Only an inner join's time columns carry watermarks out (an outer
    // join pads them with NULLs; a semi join's rows are not pairs).
    if let Some(time) = time.as_ref().filter(|_| join_kind == JoinKind::Inner) {
        // A future pair has a left time at or above min(wl, wr - hi), and a
        // right time at or above min(wr, wl + lo).
        let left_width = left.schema.fields().len();
        let (left_time, right_time) = (
            left.watermarked.get(time.left_column) == Some(&true),
            right.watermarked.get(time.right_column) == Some(&true),
        );
        if let Some(slot) = watermarked.get_mut(time.left_column) {
            *slot = left_time && right_time && time.left_expiry.is_some();
        }
        if let Some(slot) = watermarked.get_mut(left_width + time.right_column) {
            *slot = left_time && right_time && time.right_expiry.is_some();
        }
    }
    let state = lowering.state_number()?;
    Ok(Node {
        kind: Kind::Join(JoinNode {
            join_kind,
            routes: vec![
                KeyRoute { keys: left_key_exprs, types: key_types.clone() },
                KeyRoute { keys: right_key_exprs, types: key_types },
            ],
            key_schema,
            filter,
            joined_schema,
            time,
            state,
        }),
        inputs: vec![left, right],
        schema,
        watermarked,
        detail: LogicalPlan::Join(join.clone()).display().to_string(),
    })
}

/// Column `index` of `schema`, as a column reference.
fn column_of(schema: &DFSchema, index: usize) -> Result<datafusion::common::Column> {
    schema
        .columns()
        .into_iter()
        .nth(index)
        .ok_or_else(|| SqlError::internal(format!("the schema has no column {index}")))
}

/// The time bounds of a join between watermarked columns, if any.
/// `same_time_only` (outer, semi and anti joins): only bounds that pair
/// rows of equal times count. Such a join's output for a row depends on
/// all of its partners, so a row may leave only with every partner it
/// ever had: with equal times they leave together, once both watermarks
/// pass their time; with a wider interval a partner could leave first.
fn join_time(
    lowering: &Lowering,
    join: &datafusion::logical_expr::Join,
    left: &Node,
    right: &Node,
    same_time_only: bool,
) -> Result<Option<JoinTime>> {
    let Some(bounds) = interval::time_bounds(join, &left.watermarked, &right.watermarked) else {
        return Ok(None);
    };
    if same_time_only && (bounds.lo != Some(0) || bounds.hi != Some(0)) {
        return Ok(None);
    }
    let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
    let left_expiry = match bounds.hi {
        Some(hi) => {
            let column = Expr::Column(column_of(right_schema, bounds.right_column)?);
            let threshold = lowering.expr(&(column - interval::interval(hi)), right_schema)?;
            Some(Derivation::new(right.schema.clone(), &[threshold], &[Some(bounds.right_column)]))
        }
        None => None,
    };
    let right_expiry = match bounds.lo {
        Some(lo) => {
            let column = Expr::Column(column_of(left_schema, bounds.left_column)?);
            let threshold = lowering.expr(&(column + interval::interval(lo)), left_schema)?;
            Some(Derivation::new(left.schema.clone(), &[threshold], &[Some(bounds.left_column)]))
        }
        None => None,
    };
    Ok(Some(JoinTime { left_column: bounds.left_column, right_column: bounds.right_column, left_expiry, right_expiry }))
}

impl JoinNode {
    /// One copy of the join, holding the keys `ownership` gives it.
    pub fn build(
        &self,
        node: &Node,
        left: Box<dyn Operator>,
        right: Box<dyn Operator>,
        ownership: Ownership,
        cx: &BuildContext,
    ) -> Result<Box<dyn Operator>> {
        let (left_schema, right_schema) = (left.schema(), right.schema());
        let prefix = cx.prefix(self.state);
        let side = |input, route: &KeyRoute, tag: u8| {
            JoinSide::new(input, route.keys.clone(), &[&prefix[..], &[tag]].concat())
        };
        let [left_route, right_route] = self.routes.as_slice() else {
            return Err(SqlError::internal("a join node without a route for each side"));
        };
        let join = Join::new(
            side(left, left_route, 0)?,
            side(right, right_route, 1)?,
            self.join_kind,
            self.key_schema.clone(),
            self.filter.clone(),
            self.joined_schema.clone(),
            node.schema.clone(),
        )?;
        Ok(Box::new(match &self.time {
            Some(time) => join.with_time_bounds(TimeBounds {
                left_expiry: time.left_expiry.clone(),
                right_expiry: time.right_expiry.clone(),
                left: ExpiryIndex::new(time.left_column, &left_schema)?,
                right: ExpiryIndex::new(time.right_column, &right_schema)?,
                ownership,
                stats: cx.stats.clone(),
            }),
            None => join,
        }))
    }
}
