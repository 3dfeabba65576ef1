//! ORDER BY … LIMIT/OFFSET ([`crate::stream::ops::topn::TopN`]): the view
//! holds the rows ranked `skip..skip + fetch`.

use datafusion::logical_expr::{FetchType, Limit, LogicalPlan, SkipType, Sort, SortExpr};

use super::BuildContext;
use super::{Kind, Node};
use crate::error::Result;
use crate::plan::lowering::{Lowering, SortKeys, unsupported};
use crate::stream::Operator;
use crate::stream::ops::topn::TopN;
use crate::stream::rowcodec::RowCodec;

#[derive(Clone)]
pub struct TopNNode {
    pub sort: SortKeys,
    pub skip: usize,
    pub fetch: usize,
    pub state: u16,
}

/// The top `fetch` rows of `input` (lowered from `input_plan`) after
/// `skip`, ordered by `sort`.
#[allow(clippy::too_many_arguments)]
pub(in crate::plan) fn lower(
    lowering: &mut Lowering,
    plan: &LogicalPlan,
    input_plan: &LogicalPlan,
    sort: &[SortExpr],
    skip: usize,
    fetch: usize,
    input: Node,
) -> Result<Node> {
    let keys = lowering.sort_keys(sort, input_plan.schema())?;
    let state = lowering.state_number()?;
    Ok(Node {
        kind: Kind::TopN(TopNNode { sort: keys, skip, fetch, state }),
        schema: input.schema.clone(),
        watermarked: vec![false; input.schema.fields().len()],
        inputs: vec![input],
        detail: plan.display().to_string(),
    })
}

/// LIMIT/OFFSET, which a view can keep only over an ORDER BY: the sort, the
/// rows skipped and the rows kept.
pub(in crate::plan) fn limit(limit: &Limit) -> Result<(&Sort, usize, usize)> {
    let skip = match limit.get_skip_type()? {
        SkipType::Literal(n) => n,
        SkipType::UnsupportedExpr => return Err(unsupported("a non-constant OFFSET")),
    };
    let fetch = match limit.get_fetch_type()? {
        FetchType::Literal(n) => n.unwrap_or(usize::MAX),
        FetchType::UnsupportedExpr => return Err(unsupported("a non-constant LIMIT")),
    };
    match limit.input.as_ref() {
        LogicalPlan::Sort(sort) => Ok((sort, skip, sort.fetch.map_or(fetch, |f| f.saturating_sub(skip).min(fetch)))),
        _ => Err(unsupported("LIMIT/OFFSET without ORDER BY")),
    }
}

impl TopNNode {
    pub fn build(&self, input: Box<dyn Operator>, cx: &BuildContext) -> Result<Box<dyn Operator>> {
        let codec = RowCodec::with_options(self.sort.schema.clone(), &self.sort.options)?;
        Ok(Box::new(TopN::new(input, self.sort.exprs.clone(), codec, self.skip, self.fetch, &cx.prefix(self.state))?))
    }
}
