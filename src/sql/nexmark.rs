//! `nexmark(stream, events [, first_event [, events_per_second]])`: the Nexmark benchmark's
//! person, auction or bid stream as a table, from the reference generator
//! (the `nexmark` crate: the same ids, prices, hot keys and timestamps as
//! the Java generator of the Nexmark suite).
//!
//! `events` counts events of all three streams, as Nexmark's event count
//! does (1 person : 3 auctions : 46 bids); the rows of `stream` among them
//! are returned, starting at event number `first_event` (default 0; so a
//! stream can be loaded in parts). Event times start at 2015-07-15 00:00:00
//! UTC (fixed, so that results are reproducible) and advance at
//! `events_per_second` (default 10,000, the reference generator's rate). Use it to load tables (`INSERT INTO bid SELECT * FROM
//! nexmark('bid', 100000)`) or in a batch query; the `nexmark` source
//! connector (`connectors::nexmark`) streams the same events at a rate.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;

use crate::connectors::nexmark::{DEFAULT_RATE, MAX_EVENTS, MAX_FIRST_EVENT, MAX_RATE, generate, schema, stream_named};
use crate::error::{SqlError, sqlstate};

type DfResult<T> = datafusion::common::Result<T>;

#[derive(Debug, Default)]
pub struct NexmarkFunction;

fn invalid(message: impl Into<String>) -> datafusion::common::DataFusionError {
    SqlError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!(
            "nexmark: {}; usage: nexmark('person' | 'auction' | 'bid', events [, first_event [, events_per_second]])",
            message.into()
        ),
    )
    .into_datafusion()
}

fn integer(arg: &Expr, what: &str) -> DfResult<i64> {
    match arg {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Ok(*v),
        Expr::Literal(ScalarValue::Int32(Some(v)), _) => Ok(*v as i64),
        other => Err(invalid(format!("{what} must be an integer literal, not {other}"))),
    }
}

impl TableFunctionImpl for NexmarkFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let (stream, events, first, rate) = match args.exprs() {
            [stream, events] => (stream, events, None, None),
            [stream, events, first] => (stream, events, Some(first), None),
            [stream, events, first, rate] => (stream, events, Some(first), Some(rate)),
            other => return Err(invalid(format!("{} arguments given", other.len()))),
        };
        let events = integer(events, "the event count")?;
        let first = first.map(|f| integer(f, "the first event")).transpose()?.unwrap_or(0);
        let rate = rate.map(|r| integer(r, "the events per second")).transpose()?.unwrap_or(DEFAULT_RATE as i64);
        let stream = match stream {
            Expr::Literal(ScalarValue::Utf8(Some(name)), _) => {
                stream_named(name).ok_or_else(|| invalid(format!("unknown stream '{name}'")))?
            }
            other => return Err(invalid(format!("the stream must be a string literal, not {other}"))),
        };
        if !(0..=MAX_EVENTS).contains(&events) {
            return Err(invalid(format!("the event count must be between 0 and {MAX_EVENTS}")));
        }
        if first < 0 || !(1..=MAX_RATE).contains(&rate) {
            return Err(invalid(format!(
                "the first event must not be negative and the rate must be between 1 and {MAX_RATE} events per second"
            )));
        }
        if first > MAX_FIRST_EVENT {
            return Err(invalid(format!("the first event must be at most {MAX_FIRST_EVENT}")));
        }
        let batches =
            generate(stream, first as u64, (first + events) as u64, rate as u64).map_err(SqlError::into_datafusion)?;
        Ok(Arc::new(MemTable::try_new(schema(stream), vec![batches])?))
    }
}
