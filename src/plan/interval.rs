//! Finds the time bounds of an inner join: how far apart in event time two
//! joined rows can be, from the join's equi-keys and residual filter.
//!
//! `ON a.ts = b.ts` (a window join on `window_start`) bounds
//! `b.ts - a.ts` to [0, 0]; `b.ts BETWEEN a.ts - INTERVAL '5' SECOND AND
//! a.ts + INTERVAL '10' SECOND` to [-5 s, +10 s]; either bound alone also
//! counts. Only columns that carry a watermark on both sides qualify: the
//! bounds are what lets the join forget rows as the watermarks pass.

use datafusion::arrow::datatypes::IntervalMonthDayNano;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Join, Operator};

/// `left.t + lo <= right.t <= left.t + hi` (nanoseconds), for the left
/// column `left_column` and the right column `right_column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub left_column: usize,
    pub right_column: usize,
    pub lo: Option<i128>,
    pub hi: Option<i128>,
}

/// The join's time bounds on the first pair of watermarked columns that
/// has any (`left_watermarked[i]`: left column `i` carries a watermark).
pub fn time_bounds(join: &Join, left_watermarked: &[bool], right_watermarked: &[bool]) -> Option<Bounds> {
    let left_schema = join.left.schema();
    let right_schema = join.right.schema();
    let left_width = left_schema.fields().len();
    let mut found: Vec<Bounds> = Vec::new();
    let mut add = |l: usize, r: usize, lo: Option<i128>, hi: Option<i128>| {
        if !left_watermarked.get(l).copied().unwrap_or(false) || !right_watermarked.get(r).copied().unwrap_or(false) {
            return;
        }
        match found.iter_mut().find(|b| b.left_column == l && b.right_column == r) {
            // Several conditions on one pair: the tightest of each.
            Some(b) => {
                b.lo = tighter(b.lo, lo, i128::max);
                b.hi = tighter(b.hi, hi, i128::min);
            }
            None => found.push(Bounds { left_column: l, right_column: r, lo, hi }),
        }
    };
    for (l, r) in &join.on {
        if let (Some(l), Some(r)) = (column_in(l, left_schema), column_in(r, right_schema)) {
            add(l, r, Some(0), Some(0));
        }
    }
    if let Some(filter) = &join.filter {
        let joined = left_schema.join(right_schema).ok()?;
        for conjunct in split_conjunction(filter) {
            for (a, op, b) in comparisons(conjunct) {
                // a op b with a = col_a + ca, b = col_b + cb.
                let (Some((ia, ca)), Some((ib, cb))) = (linear(&a, &joined), linear(&b, &joined)) else { continue };
                let (a_right, b_right) = (ia >= left_width, ib >= left_width);
                if a_right == b_right {
                    continue;
                }
                // col_a - col_b >= k (GtEq) or <= k (LtEq).
                let k = cb - ca;
                let (l, r, diff_lower, diff_upper) = match (op, a_right) {
                    // right - left >= k
                    (Operator::GtEq | Operator::Gt, true) => (ib, ia - left_width, Some(k), None),
                    // left - right >= k  =>  right - left <= -k
                    (Operator::GtEq | Operator::Gt, false) => (ia, ib - left_width, None, Some(-k)),
                    // right - left <= k
                    (Operator::LtEq | Operator::Lt, true) => (ib, ia - left_width, None, Some(k)),
                    // left - right <= k  =>  right - left >= -k
                    (Operator::LtEq | Operator::Lt, false) => (ia, ib - left_width, Some(-k), None),
                    _ => continue,
                };
                add(l, r, diff_lower, diff_upper);
            }
        }
    }
    found.into_iter().find(|b| b.lo.is_some() || b.hi.is_some())
}

fn tighter(a: Option<i128>, b: Option<i128>, pick: fn(i128, i128) -> i128) -> Option<i128> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The comparisons a conjunct states, as (a, op, b) with op one of
/// `>=`, `>`, `<=`, `<` (BETWEEN gives two).
fn comparisons(expr: &Expr) -> Vec<(Expr, Operator, Expr)> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::GtEq | Operator::Gt | Operator::LtEq | Operator::Lt) =>
        {
            vec![((**left).clone(), *op, (**right).clone())]
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            vec![
                ((**expr).clone(), Operator::GtEq, (**low).clone()),
                ((**expr).clone(), Operator::LtEq, (**high).clone()),
            ]
        }
        _ => Vec::new(),
    }
}

/// A plain column of `schema`.
fn column_in(expr: &Expr, schema: &DFSchema) -> Option<usize> {
    match expr {
        Expr::Column(c) => schema.index_of_column(c).ok(),
        Expr::Cast(cast) => column_in(&cast.expr, schema),
        _ => None,
    }
}

/// `column + constant interval` as (column index, nanoseconds).
fn linear(expr: &Expr, schema: &DFSchema) -> Option<(usize, i128)> {
    match expr {
        Expr::Column(c) => Some((schema.index_of_column(c).ok()?, 0)),
        Expr::Cast(cast) => linear(&cast.expr, schema),
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Plus, right }) => {
            match (linear(left, schema), nanos(right)) {
                (Some((c, n)), Some(m)) => Some((c, n + m)),
                _ => {
                    let (c, n) = linear(right, schema)?;
                    Some((c, n + nanos(left)?))
                }
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) => {
            let (c, n) = linear(left, schema)?;
            Some((c, n - nanos(right)?))
        }
        _ => None,
    }
}

/// A constant fixed-length interval in nanoseconds.
fn nanos(expr: &Expr) -> Option<i128> {
    match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i128 * 86_400_000_000_000 + v.nanoseconds as i128)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i128 * 86_400_000_000_000 + v.milliseconds as i128 * 1_000_000)
        }
        Expr::Cast(cast) => nanos(&cast.expr),
        _ => None,
    }
}

/// An interval literal of `nanos` nanoseconds.
pub fn interval(nanos: i128) -> Expr {
    let days = (nanos / 86_400_000_000_000) as i32;
    let rest = (nanos % 86_400_000_000_000) as i64;
    datafusion::prelude::lit(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, days, rest))))
}
